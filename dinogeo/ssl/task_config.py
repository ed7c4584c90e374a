"""Typed option groups of :class:`~dinogeo.ssl.module.SSLTask` (read by jsonargparse).

Each group is a plain dataclass, so a YAML config reads ``model.init_args.optim.lr: 1e-3`` and
a command line ``--model.optim.lr 1e-3``. Defaults follow the DINOv3 recipe
(``ssl_default_config.yaml``) unless noted; the tiny configs override them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from dinogeo.errors import ConfigError

__all__ = [
    "DINOHeadConfig",
    "GramConfig",
    "InitConfig",
    "LossConfig",
    "OptimConfig",
    "coerce",
    "config_dict",
]


@dataclass
class DINOHeadConfig:
    """A DINO or iBOT projection head.

    Attributes:
        out_dim: number of prototypes K (65536 in the recipe).
        hidden_dim: MLP width.
        bottleneck_dim: width of the L2-normalised bottleneck.
        nlayers: MLP layers.
    """

    out_dim: int = 65536
    hidden_dim: int = 2048
    bottleneck_dim: int = 256
    nlayers: int = 3


@dataclass
class LossConfig:
    """Loss weights and temperatures.

    Attributes:
        student_temp: student softmax temperature.
        teacher_temp: teacher temperature after the warm-up.
        teacher_temp_warmup: teacher temperature at step 0 (linear warm-up).
        teacher_temp_warmup_steps: warm-up length in steps (30 epochs in the recipe).
        dino_weight: factor of the DINO term (local and global already pair-weighted).
        local_weight: extra factor on the DINO local term (the recipe's lambda_local); with
            Gram anchoring, its value after the Gram weight's ramp.
        local_weight_start: lambda_local before the Gram weight's ramp; it follows the ramp's
            half cosine to ``local_weight`` (the 7B Gram stage: 1 to 0.5). Unused without Gram.
        ibot_weight: factor of the iBOT term.
        koleo_weight: factor of the KoLeo term, applied per global crop (0.1).
        koleo_group_size: 0 computes KoLeo per rank; N > 0 all-gathers features and searches
            neighbours within groups of N samples of a global crop (the distributed KoLeo,
            the recipe's ``koleo_distributed_loss_group_size``: 16 = 2 ranks of 8 in the 7B
            high-resolution stage); N must be a multiple of the per-rank batch.
        sinkhorn_iterations: Sinkhorn-Knopp rounds.
        mask_ratio: distillation only (``DistillTask``): iBOT (min, max) mask ratio of the
            positions scored. Pretraining draws its masks in the data module
            (``data.mask_ratio``) and refuses a value here.
        mask_probability: distillation only, likewise (``data.mask_probability`` in pretraining).
    """

    student_temp: float = 0.1
    teacher_temp: float = 0.07
    teacher_temp_warmup: float = 0.04
    teacher_temp_warmup_steps: int = 1000
    dino_weight: float = 1.0
    local_weight: float = 1.0
    local_weight_start: float = 1.0
    ibot_weight: float = 1.0
    koleo_weight: float = 0.1
    koleo_group_size: int = 0
    sinkhorn_iterations: int = 3
    mask_ratio: tuple[float, float] = (0.1, 0.5)
    mask_probability: float = 0.5


@dataclass
class OptimConfig:
    """AdamW, schedules and gradient handling.

    Attributes:
        lr: peak learning rate before the batch-size scaling rule.
        min_lr: final learning rate of the cosine schedule.
        lr_schedule: ``"cosine"`` (v1: warm-up then cosine) or ``"constant"`` (v2: warm-up then
            constant).
        warmup_steps: learning-rate warm-up, from ``stage_start_step``.
        warmup_start_lr: learning rate at the first warm-up step (0 for a new run; a later
            stage starts from the lr the previous stage ended with, so the boundary is
            continuous). Not batch-scaled.
        warmup_shape: ``"linear"`` (stage 1) or ``"cosine"`` (the half-cosine ramp of the
            recipe's high-resolution stage).
        stage_start_step: first step of this training stage (0, or the step a Gram or
            high-resolution stage resumes the run at); the lr warm-up starts there.
        lr_scaling: ``"sqrt_wrt_1024"`` (DINOv3), ``"linear_wrt_256"`` or ``"none"``.
        weight_decay: weight decay at step 0.
        weight_decay_end: weight decay at the end (cosine; equal values give a constant).
        momentum: teacher EMA momentum at step 0.
        momentum_end: momentum at the end (cosine).
        layerwise_decay: layer-wise learning-rate decay (1 disables).
        patch_embed_lr_mult: learning-rate factor of the patch embedding.
        freeze_last_layer_steps: steps during which the prototype layers do not train.
        clip_grad: per-module (backbone, DINO head, iBOT head) gradient-norm limit; 0 disables.
        betas: AdamW betas.
        schedule_steps: length of the schedules; default: the trainer's ``max_steps``.
    """

    lr: float = 1e-3
    min_lr: float = 1e-6
    lr_schedule: str = "cosine"
    warmup_steps: int = 100
    warmup_start_lr: float = 0.0
    warmup_shape: str = "linear"
    stage_start_step: int = 0
    lr_scaling: str = "sqrt_wrt_1024"
    weight_decay: float = 0.04
    weight_decay_end: float = 0.4
    momentum: float = 0.992
    momentum_end: float = 1.0
    layerwise_decay: float = 0.9
    patch_embed_lr_mult: float = 0.2
    freeze_last_layer_steps: int = 0
    clip_grad: float = 3.0
    betas: tuple[float, float] = (0.9, 0.999)
    schedule_steps: int | None = None


@dataclass
class GramConfig:
    """Gram anchoring.

    Attributes:
        enabled: build a Gram teacher and add the Gram loss.
        weight: loss weight after the ramp.
        weight_start_step: step at which the weight starts ramping up from 0.
        weight_warmup_steps: length of the linear ramp.
        ckpt: Gram teacher from a file (dinogeo ``.safetensors``, a pretrain ``.ckpt`` or an
            official DINOv3 ``.pth``).
        from_initial: the initial weights (e.g. the official backbone) are the Gram teacher.
        from_ema_at_start: when no other source set it, copy the EMA teacher when training
            starts (stage 2 resumed from stage 1).
        first_update: step (counted from 1) of the first copy of the EMA teacher; -1 never.
        update_frequency: steps between later copies.
        max_updates: maximum number of copies from the EMA teacher.
        remove_neg: zero negative similarities in both Gram matrices.
        img_level: per-image Gram matrices (recipe) rather than one batch-level matrix.
    """

    enabled: bool = False
    weight: float = 1.0
    weight_start_step: int = 0
    weight_warmup_steps: int = 0
    ckpt: str | None = None
    from_initial: bool = False
    from_ema_at_start: bool = True
    first_update: int = -1
    update_frequency: int = 10_000
    max_updates: int = 3
    remove_neg: bool = False
    img_level: bool = True


@dataclass
class InitConfig:
    """Where the weights start from.

    Attributes:
        official_checkpoint: Meta's DINOv3 backbone ``.pth``; loaded into student and teacher
            (patch embedding expanded to the run's bands by name), heads freshly initialised.
        backbone: a dinogeo backbone (``.safetensors``) to start from instead.
        head_warmup_steps: steps during which only the heads train (frozen backbone).
        load_on_rank0: keep the backbones on the meta device (no memory) until training sets
            the model up (Lightning's ``configure_model``), then read the start file (and
            ``gram.ckpt``) on global rank 0 only and broadcast its tensors; under FSDP
            (configs/ssl/fsdp.yaml sets it) each rank then holds only its shards and the
            other ranks never open the file. Until then the task has no weights.
    """

    official_checkpoint: str | None = None
    backbone: str | None = None
    head_warmup_steps: int = 0
    load_on_rank0: bool = False


def coerce[T](cls: type[T], value: Any) -> T:
    """Build a config dataclass from ``None`` (defaults), a dict or an instance.

    Args:
        cls: the dataclass type.
        value: ``None``, a mapping of its fields, or an instance.

    Returns:
        An instance of ``cls``.

    Raises:
        ConfigError: for unknown fields or another type.
    """
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if isinstance(value, dict):
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(value) - names)
        if unknown:
            raise ConfigError(
                f"{cls.__name__}: unknown option(s) {unknown}; valid options: {sorted(names)}"
            )
        return cls(**value)
    raise ConfigError(f"{cls.__name__}: expected a mapping of options, got {type(value).__name__}")


def config_dict(cfg: Any) -> dict[str, Any]:
    """A config dataclass as a plain dict (tuples as lists), for hyperparameters and cards."""
    out = dataclasses.asdict(cfg)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}
