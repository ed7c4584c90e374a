"""The per-step schedules of a distillation run (:class:`~dinogeo.ssl.distill_task.DistillTask`).

When the teacher's heads are warmed up first, its ``warmup_steps`` come first: the students'
schedules (learning rate, weight decay, EMA momentum) are frozen at their start values until
then and the warm-up heads have their own learning rate (``head_lr``, a short ramp to the peak,
0 afterwards).
"""

from __future__ import annotations

import numpy as np

from dinogeo.errors import ConfigError
from dinogeo.ssl.schedules import Schedule, lr_scaling, warmup_constant, warmup_cosine
from dinogeo.ssl.task_config import LossConfig, OptimConfig
from dinogeo.ssl.task_schedules import teacher_temp_schedule

__all__ = ["DISTILL_SCHEDULES", "build_distill_schedules"]

#: the schedules :func:`build_distill_schedules` returns
DISTILL_SCHEDULES = ("lr", "wd", "momentum", "teacher_temp", "head_lr")


def build_distill_schedules(
    opt: OptimConfig,
    loss: LossConfig,
    warmup_steps: int,
    total_steps: int,
    global_batch: int,
) -> dict[str, Schedule]:
    """Per-step schedules; the students' start after the teacher-head warm-up.

    Args:
        opt: the students' optimiser options.
        loss: loss options (teacher temperature and its warm-up).
        warmup_steps: teacher-head warm-up steps (0 when the teacher brings its heads).
        total_steps: length of the schedules.
        global_batch: images per step over all ranks, for the learning-rate scaling rule.

    Returns:
        One :class:`Schedule` per name of :data:`DISTILL_SCHEDULES`.

    Raises:
        ConfigError: if no step is left after the warm-up, or for an unknown ``lr_schedule``.
    """
    warm = min(warmup_steps, total_steps - 1)
    if total_steps - warm < 1:
        raise ConfigError(
            f"trainer.max_steps={total_steps} leaves no step after the teacher-head warm-up "
            f"({warmup_steps} steps): train longer"
        )
    peak = lr_scaling(opt.lr, global_batch, opt.lr_scaling)
    ramp = min(opt.warmup_steps, total_steps - warm)
    if opt.lr_schedule == "cosine":
        lr = warmup_cosine(0.0, peak, opt.min_lr, total_steps, ramp, freeze_steps=warm)
    elif opt.lr_schedule == "constant":
        lr = warmup_constant(0.0, peak, None, total_steps, ramp, freeze_steps=warm)
    else:
        raise ConfigError(f"optim.lr_schedule={opt.lr_schedule!r}: use 'cosine' or 'constant'")
    wd = warmup_cosine(
        opt.weight_decay, opt.weight_decay, opt.weight_decay_end, total_steps, 0,
        opt.weight_decay, freeze_steps=warm,
    )  # fmt: skip
    mom = warmup_cosine(
        opt.momentum, opt.momentum, opt.momentum_end, total_steps, 0, opt.momentum,
        freeze_steps=warm,
    )  # fmt: skip
    temp = teacher_temp_schedule(loss, total_steps)
    head_ramp = min(opt.warmup_steps, max(warm // 2, 1))
    head_lr = Schedule(
        np.where(
            np.arange(total_steps) < warm,
            np.asarray(warmup_constant(0.0, peak, None, total_steps, head_ramp)),
            0.0,
        )
    )
    return {"lr": lr, "wd": wd, "momentum": mom, "teacher_temp": temp, "head_lr": head_lr}
