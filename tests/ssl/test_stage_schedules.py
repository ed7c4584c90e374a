"""The recipe's stages chain: learning rate, weight decay, EMA momentum and teacher temperature
on both sides of every stage boundary of pretrain.yaml -> gram_anchor.yaml -> high_res.yaml,
parsed by the real ``dinogeo pretrain`` parser."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from dinogeo.ssl.datamodule import SSLDataModule
from dinogeo.ssl.module import SSLTask
from dinogeo.ssl.pretrain import PretrainCLI
from dinogeo.ssl.schedules import Schedule, lr_scaling
from dinogeo.ssl.task_config import GramConfig, LossConfig, OptimConfig, coerce
from dinogeo.ssl.task_schedules import build_task_schedules

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "ssl"
STAGES = [
    ["pretrain.yaml"],
    ["pretrain.yaml", "gram_anchor.yaml"],
    ["pretrain.yaml", "gram_anchor.yaml", "high_res.yaml"],
]


class _ParseOnly(PretrainCLI):
    """The real parser (config layering, type checks), without building model or data."""

    def instantiate_classes(self) -> None:
        return None


def _plain(value: Any) -> Any:
    return value.as_dict() if hasattr(value, "as_dict") else dict(value)


def parse_stack(names: list[str]) -> Any:
    """The parsed configuration of the layered config files ``names``."""
    args = [a for name in names for a in ("--config", str(CONFIGS / name))]
    return _ParseOnly(SSLTask, SSLDataModule, run=False, args=args).config


def stack_schedules(names: list[str]) -> tuple[dict[str, Schedule], Any]:
    cfg = parse_stack(names)
    model = cfg.model
    optim = coerce(OptimConfig, _plain(model.optim))
    loss = coerce(LossConfig, _plain(model.loss))
    gram = coerce(GramConfig, _plain(model.gram))
    total = int(cfg.trainer.max_steps)
    batch = int(cfg.data.batch_size) * int(cfg.trainer.devices)
    return build_task_schedules(optim, loss, gram, total, batch), cfg


@pytest.mark.parametrize("stage", [1, 2])
def test_stage_boundary_continuity(stage):
    before, cfg_before = stack_schedules(STAGES[stage - 1])
    after, cfg_after = stack_schedules(STAGES[stage])
    boundary = int(cfg_before.trainer.max_steps)
    optim = cfg_after.model.optim
    assert int(optim.stage_start_step) == boundary, "the stage must start where the last ended"
    last, first = boundary - 1, boundary
    # weight decay, momentum and teacher temperature continue at the values the stage ended with
    for name in ("wd", "momentum", "teacher_temp"):
        assert after[name][first] == pytest.approx(before[name][last], abs=1e-9), name
        assert after[name][first + 5000] == pytest.approx(before[name][last], abs=1e-9), name
    # the EMA teacher keeps learning (momentum 1 would freeze the teacher that is exported)
    assert after["momentum"][first] < 1.0
    # learning rate: no jump up at the boundary, then the stage's own constant after its warm-up
    peak = lr_scaling(float(optim.lr), int(cfg_after.data.batch_size), str(optim.lr_scaling))
    warm = int(optim.warmup_steps)
    assert warm > 0
    assert after["lr"][first] <= before["lr"][last] * (1 + 1e-9)
    steps = [after["lr"][first + i] for i in range(warm + 1)]
    assert max(b - a for a, b in zip(steps, steps[1:])) <= peak * math.pi / (2 * warm) + 1e-12
    assert after["lr"][first + warm] == pytest.approx(peak)
    assert after["lr"][int(cfg_after.trainer.max_steps) - 1] == pytest.approx(peak)
    assert str(optim.lr_schedule) == "constant"


def test_stage_one_ends_at_min_lr_and_gram_stage_warms_from_it():
    before, cfg = stack_schedules(STAGES[0])
    after, _ = stack_schedules(STAGES[1])
    end = int(cfg.trainer.max_steps) - 1
    assert before["lr"][end] == pytest.approx(float(cfg.model.optim.min_lr))
    assert after["lr"][end + 1] == pytest.approx(before["lr"][end])
    assert before["wd"][end] == pytest.approx(float(cfg.model.optim.weight_decay_end))
    assert before["momentum"][end] == pytest.approx(float(cfg.model.optim.momentum_end))


def test_gram_weight_and_lambda_local_follow_a_cosine_ramp():
    sched, cfg = stack_schedules(STAGES[1])
    gram = cfg.model.gram
    start, ramp = int(gram.weight_start_step), int(gram.weight_warmup_steps)
    weight = float(gram.weight)
    assert sched["gram_weight"][start - 1] == sched["gram_weight"][start] == 0.0
    assert sched["gram_weight"][start + ramp] == pytest.approx(weight)
    # half cosine: slow at both ends (a linear ramp would be at 10% here), half-way at the middle
    assert sched["gram_weight"][start + ramp // 2] == pytest.approx(weight / 2)
    assert sched["gram_weight"][start + ramp // 10] < 0.05 * weight
    lam = sched["local_weight"]
    assert lam[start - 1] == lam[start] == pytest.approx(1.0)
    assert lam[start + ramp] == pytest.approx(float(cfg.model.loss.local_weight)) == 0.5
    assert lam[start + ramp // 2] == pytest.approx(0.75)
    hr, _ = stack_schedules(STAGES[2])
    assert hr["local_weight"][120000] == pytest.approx(0.5)
    assert hr["gram_weight"][120000] == pytest.approx(1.5)


def test_stage_start_past_the_run_is_a_config_error():
    from dinogeo.errors import ConfigError

    with pytest.raises(ConfigError, match="stage_start_step"):
        build_task_schedules(OptimConfig(stage_start_step=50), LossConfig(), GramConfig(), 40, 16)
