"""The collapse alarm also fires on uniform teacher targets (entropy >= 0.98 log K once the
teacher temperature warm-up is over), the failure where DINO and iBOT sit at log K."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from dinogeo.ssl.monitor import CollapseMonitor
from dinogeo.ssl.task_config import LossConfig

HEALTHY_FEATURES = {"health/embedding_std": 0.8, "health/mean_cosine": 0.1}


class _Module:
    """The parts of an SSLTask the monitor reads: its loss options and ``log``."""

    def __init__(self, warmup: int) -> None:
        self.loss_cfg = LossConfig(teacher_temp_warmup_steps=warmup)
        self.logged: list[float] = []

    def log(self, name: str, value: float, **_: object) -> None:
        assert name == "health/collapse"
        self.logged.append(value)


def _run(monitor: CollapseMonitor, module: _Module, entropies: list[float]) -> list[float]:
    trainer = SimpleNamespace(callback_metrics={}, global_step=0, should_stop=False)
    for step, entropy in enumerate(entropies):
        trainer.global_step = step
        trainer.callback_metrics = {
            **{k: torch.tensor(v) for k, v in HEALTHY_FEATURES.items()},
            "health/teacher_entropy_norm": torch.tensor(entropy),
        }
        monitor.on_train_batch_end(trainer, module, None, None, step)
    return module.logged


def test_uniform_teacher_targets_raise_the_alarm():
    monitor = CollapseMonitor(patience=5, start_step=2, stop_on_collapse=True)
    logged = _run(monitor, _Module(warmup=10), [1.0] * 20)
    # steps 2..9 are inside the temperature warm-up, 10..14 the patience: the alarm at step 14
    assert logged[:12] == [0.0] * 12 and logged[12] == 1.0
    assert monitor.collapsed


def test_learning_teacher_and_warm_up_do_not_raise_it():
    learning = CollapseMonitor(patience=3)
    assert max(_run(learning, _Module(warmup=0), [0.9] * 30)) == 0.0
    warming = CollapseMonitor(patience=3)
    assert max(_run(warming, _Module(warmup=30), [1.0] * 30)) == 0.0
    # a uniform stretch shorter than the patience is forgiven
    brief = CollapseMonitor(patience=5)
    assert max(_run(brief, _Module(warmup=0), [0.99] * 4 + [0.5] + [0.99] * 4)) == 0.0


def test_a_collapsed_distillation_student_raises_the_alarm():
    """Distillation logs each student's indicators under its name ("small/health/...")."""
    monitor = CollapseMonitor(patience=3)
    module = _Module(warmup=0)
    trainer = SimpleNamespace(callback_metrics={}, global_step=0, should_stop=False)
    for step in range(5):
        trainer.global_step = step
        trainer.callback_metrics = {
            "small/health/embedding_std": torch.tensor(0.8),
            "small/health/mean_cosine": torch.tensor(0.1),
            "tiny/health/embedding_std": torch.tensor(0.001),  # every embedding the same
            "tiny/health/mean_cosine": torch.tensor(0.999),
        }
        monitor.on_train_batch_end(trainer, module, None, None, step)
    assert module.logged == [0.0, 0.0, 1.0, 1.0, 1.0]
    assert monitor.collapsed
