"""Per-iteration schedules (learning rate, weight decay, momentum, temperatures, loss weights)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from dinogeo.errors import ConfigError

__all__ = ["Schedule", "lr_scaling", "warmup_constant", "warmup_cosine"]


class Schedule:
    """A precomputed per-step schedule; indexing past the end returns the last value.

    Args:
        values: One value per step (at least one).
    """

    def __init__(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        if values.size == 0:
            raise ConfigError("Schedule: needs at least one step; check total_steps.")
        self.values = values

    def __getitem__(self, step: int) -> float:
        """Value at ``step`` (clamped to ``[0, len - 1]``)."""
        return float(self.values[min(max(int(step), 0), self.values.size - 1)])

    def __len__(self) -> int:
        return int(self.values.size)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return self.values if dtype is None else self.values.astype(dtype)

    def __repr__(self) -> str:
        return f"Schedule(steps={len(self)}, first={self[0]:.4g}, last={self[len(self) - 1]:.4g})"


def _check(total_steps: int, *segments: int) -> None:
    if total_steps < 1 or any(s < 0 for s in segments) or sum(segments) > total_steps:
        raise ConfigError(
            f"schedule: total_steps={total_steps} must be >= 1 and cover the freeze/warm-up/"
            f"cosine segments {segments}; lengthen the run or shorten the warm-up."
        )


def _cosine(peak: float, end: float, steps: int) -> np.ndarray:
    # Half cosine from peak (first step) to end (last step).
    if steps <= 0:
        return np.zeros(0)
    if steps == 1:
        return np.array([end], dtype=np.float64)
    t = np.arange(steps, dtype=np.float64) / (steps - 1)
    return end + 0.5 * (peak - end) * (1.0 + np.cos(math.pi * t))


def _ramp(start: float, peak: float, steps: int, shape: str) -> np.ndarray:
    # warm-up values: ``start`` at the first step, ``peak`` reached at the step after the last
    t = np.arange(steps, dtype=np.float64) / max(steps, 1)
    if shape == "linear":
        return start + (peak - start) * t
    if shape == "cosine":
        return start + (peak - start) * 0.5 * (1.0 - np.cos(math.pi * t))
    raise ConfigError(f"schedule: warmup_shape={shape!r}: use 'linear' or 'cosine'")


def warmup_cosine(
    start_value: float,
    peak_value: float,
    end_value: float,
    total_steps: int,
    warmup_steps: int,
    start_warmup_value: float = 0.0,
    freeze_steps: int = 0,
    warmup_shape: str = "linear",
) -> Schedule:
    """v1 schedule: hold, linear warm-up, then a half cosine to the end value.

    Steps ``[0, freeze_steps)`` hold ``start_warmup_value`` (0 freezes a learning rate);
    the next ``warmup_steps`` rise linearly from ``start_value`` towards ``peak_value``
    (``start_value`` at the first step, ``peak_value`` reached at the first cosine step);
    the rest follows a half cosine from ``peak_value`` to exactly ``end_value`` at the last
    step. Recipe defaults: lr ``warmup_cosine(0, lr, 1e-6, T, 10 epochs)``, weight decay
    ``warmup_cosine(0.04, 0.04, 0.4, T, 0)``, momentum ``warmup_cosine(0.992, 0.992, 1, T, 0)``.

    Args:
        start_value: First warm-up value.
        peak_value: Value after the warm-up (start of the cosine).
        end_value: Value at the last step.
        total_steps: Length of the schedule.
        warmup_steps: Number of linear warm-up steps.
        start_warmup_value: Value held during ``freeze_steps``.
        freeze_steps: Number of initial steps held at ``start_warmup_value``.
        warmup_shape: ``"linear"`` (the recipe's warm-up) or ``"cosine"`` (a half-cosine ramp,
            the recipe's high-resolution stage).

    Returns:
        A :class:`Schedule` of ``total_steps`` values.
    """
    _check(total_steps, freeze_steps, warmup_steps)
    freeze = np.full(freeze_steps, start_warmup_value, dtype=np.float64)
    warm = _ramp(start_value, peak_value, warmup_steps, warmup_shape)
    cosine = _cosine(peak_value, end_value, total_steps - freeze_steps - warmup_steps)
    return Schedule(np.concatenate([freeze, warm, cosine]))


def warmup_constant(
    start_value: float,
    peak_value: float,
    end_value: float | None,
    total_steps: int,
    warmup_steps: int,
    cosine_steps: int = 0,
    start_warmup_value: float = 0.0,
    freeze_steps: int = 0,
    warmup_shape: str = "linear",
) -> Schedule:
    """v2 schedule (DINOv3 ``schedules:``): warm-up, optional cosine segment, constant tail.

    Steps ``[0, freeze_steps)`` hold ``start_warmup_value``; then a linear warm-up from
    ``start_value`` to ``peak_value`` over ``warmup_steps``; then ``cosine_steps`` of half
    cosine from ``peak_value`` to ``end_value``; then ``end_value`` (``peak_value`` if
    ``None``) until the end. The 7B recipe's lr is ``warmup_constant(0, 5e-5, None, T,
    100k)``; its Gram weight ``warmup_constant(0, 0, 2.0, T, 1M, cosine_steps=1k)``; the
    teacher temperature ``warmup_constant(0.04, 0.07, None, T, 30 epochs)``.

    Args:
        start_value: First warm-up value.
        peak_value: Value after the warm-up.
        end_value: Value of the constant tail (``None``: ``peak_value``).
        total_steps: Length of the schedule.
        warmup_steps: Number of linear warm-up steps.
        cosine_steps: Length of the cosine segment between peak and end.
        start_warmup_value: Value held during ``freeze_steps``.
        freeze_steps: Number of initial steps held at ``start_warmup_value``.
        warmup_shape: ``"linear"`` or ``"cosine"`` (half-cosine ramp).

    Returns:
        A :class:`Schedule` of ``total_steps`` values.
    """
    end = peak_value if end_value is None else end_value
    _check(total_steps, freeze_steps, warmup_steps, cosine_steps)
    freeze = np.full(freeze_steps, start_warmup_value, dtype=np.float64)
    warm = _ramp(start_value, peak_value, warmup_steps, warmup_shape)
    cosine = _cosine(peak_value, end, cosine_steps)
    tail = np.full(total_steps - freeze_steps - warmup_steps - cosine_steps, end, dtype=np.float64)
    return Schedule(np.concatenate([freeze, warm, cosine, tail]))


def lr_scaling(base_lr: float, global_batch: int, rule: str = "sqrt_wrt_1024") -> float:
    """Scale a base learning rate to the global batch size.

    Args:
        base_lr: Learning rate before scaling.
        global_batch: Images per optimiser step over all ranks (and accumulation steps).
        rule: ``"sqrt_wrt_1024"`` (DINOv3: ``lr * 4 * sqrt(B / 1024)``),
            ``"linear_wrt_256"`` (``lr * B / 256``) or ``"none"``.

    Returns:
        The scaled learning rate.
    """
    if global_batch < 1:
        raise ConfigError(f"lr_scaling: global_batch must be >= 1, got {global_batch}.")
    if rule == "sqrt_wrt_1024":
        return base_lr * 4.0 * math.sqrt(global_batch / 1024.0)
    if rule == "linear_wrt_256":
        return base_lr * global_batch / 256.0
    if rule == "none":
        return base_lr
    raise ConfigError(
        f"lr_scaling: unknown rule {rule!r}; use 'sqrt_wrt_1024', 'linear_wrt_256' or 'none'."
    )
