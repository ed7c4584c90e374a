"""The per-step schedules of an :class:`~dinogeo.ssl.module.SSLTask` run, from its option groups.

All values are functions of the global step, so a resumed run continues exactly and the stages of
the recipe chain: a later stage (``configs/ssl/gram_anchor.yaml``, ``high_res.yaml``) resumes the
run at ``optim.stage_start_step`` with its own learning rate, warmed up from
``optim.warmup_start_lr`` (the previous stage's last value), while weight decay, momentum and
teacher temperature continue at the values the previous stage ended with.
"""

from __future__ import annotations

from dinogeo.errors import ConfigError
from dinogeo.ssl.schedules import Schedule, lr_scaling, warmup_constant, warmup_cosine
from dinogeo.ssl.task_config import GramConfig, LossConfig, OptimConfig

__all__ = ["SCHEDULE_NAMES", "build_task_schedules", "teacher_temp_schedule"]

#: the schedules :func:`build_task_schedules` returns
SCHEDULE_NAMES = ("lr", "wd", "momentum", "teacher_temp", "gram_weight", "local_weight")


def teacher_temp_schedule(loss: LossConfig, total_steps: int) -> Schedule:
    """Teacher temperature: linear warm-up from ``teacher_temp_warmup``, then constant."""
    return warmup_constant(
        loss.teacher_temp_warmup,
        loss.teacher_temp,
        None,
        total_steps,
        min(loss.teacher_temp_warmup_steps, total_steps),
    )


def build_task_schedules(
    optim: OptimConfig,
    loss: LossConfig,
    gram: GramConfig,
    total_steps: int,
    global_batch: int,
) -> dict[str, Schedule]:
    """Schedules of learning rate, weight decay, momentum, temperature and loss weights.

    * ``lr``: the batch-scaled peak ``lr_scaling(optim.lr, global_batch)``; steps before
      ``optim.stage_start_step`` (earlier stages) hold ``optim.warmup_start_lr``, then a
      ``warmup_steps`` warm-up (``optim.warmup_shape``) from ``warmup_start_lr`` to the peak,
      then a cosine to ``min_lr`` (``lr_schedule: cosine``) or the constant peak (``constant``).
    * ``wd`` and ``momentum``: cosines from their start to their end value over the whole run
      (equal values: constant).
    * ``teacher_temp``: linear warm-up, then constant.
    * ``gram_weight``: 0 up to ``gram.weight_start_step``, then a half-cosine ramp that reaches
      ``gram.weight`` after ``gram.weight_warmup_steps`` (the recipe's ``loss_weight_schedule``).
    * ``local_weight`` (lambda_local): with Gram anchoring, ``loss.local_weight_start`` until the
      Gram ramp and a half-cosine to ``loss.local_weight`` during it (the 7B Gram stage: 1 to
      0.5); without, ``loss.local_weight`` throughout.

    Args:
        optim: optimizer and schedule options.
        loss: loss options (temperatures, lambda_local).
        gram: Gram anchoring options.
        total_steps: length of the schedules.
        global_batch: images per optimizer step, for the learning-rate scaling rule.

    Returns:
        One :class:`Schedule` per name of :data:`SCHEDULE_NAMES`.

    Raises:
        ConfigError: for an unknown ``lr_schedule`` or ``warmup_shape``, or a stage start
            past the end of the run.
    """
    if optim.stage_start_step < 0 or optim.stage_start_step >= total_steps:
        raise ConfigError(
            f"optim.stage_start_step={optim.stage_start_step} must be in [0, {total_steps}) "
            f"(the run ends at step {total_steps}): set it to the step this stage resumes at"
        )
    peak = lr_scaling(optim.lr, global_batch, optim.lr_scaling)
    begin = optim.stage_start_step
    warm = min(optim.warmup_steps, total_steps - begin)
    start_lr = optim.warmup_start_lr
    if optim.lr_schedule == "cosine":
        lr = warmup_cosine(
            start_lr,
            peak,
            optim.min_lr,
            total_steps,
            warm,
            start_warmup_value=start_lr,
            freeze_steps=begin,
            warmup_shape=optim.warmup_shape,
        )
    elif optim.lr_schedule == "constant":
        lr = warmup_constant(
            start_lr,
            peak,
            None,
            total_steps,
            warm,
            start_warmup_value=start_lr,
            freeze_steps=begin,
            warmup_shape=optim.warmup_shape,
        )
    else:
        raise ConfigError(f"optim.lr_schedule={optim.lr_schedule!r}: use 'cosine' or 'constant'")
    wd = warmup_cosine(
        optim.weight_decay, optim.weight_decay, optim.weight_decay_end, total_steps, 0
    )
    mom = warmup_cosine(optim.momentum, optim.momentum, optim.momentum_end, total_steps, 0)
    temp = teacher_temp_schedule(loss, total_steps)
    ramp_start = min(gram.weight_start_step, total_steps)
    ramp = min(gram.weight_warmup_steps, total_steps - ramp_start)
    gram_weight = warmup_constant(
        0.0, gram.weight, None, total_steps, ramp, freeze_steps=ramp_start, warmup_shape="cosine"
    )
    if gram.enabled:
        local = warmup_constant(
            loss.local_weight_start,
            loss.local_weight,
            None,
            total_steps,
            ramp,
            start_warmup_value=loss.local_weight_start,
            freeze_steps=ramp_start,
            warmup_shape="cosine",
        )
    else:
        local = warmup_constant(loss.local_weight, loss.local_weight, None, total_steps, 0)
    return {
        "lr": lr,
        "wd": wd,
        "momentum": mom,
        "teacher_temp": temp,
        "gram_weight": gram_weight,
        "local_weight": local,
    }
