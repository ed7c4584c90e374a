"""Where a pretraining run's backbones start: random, a file's weights, or filled after sharding.

:func:`initial_backbone` builds the student backbone when :class:`~dinogeo.ssl.module.SSLTask`
is constructed: random, or built on the meta device and given a file's (memory-mapped) weights
without a copy. With ``init.load_on_rank0`` the backbones stay on the meta device instead, and
:func:`fill_deferred` fills them once the strategy is known: the file is read on rank 0 only,
the backbones are sharded (FSDP2) and materialised empty, and the tensors are broadcast into the
shards (:mod:`dinogeo.ssl.fsdp_load`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from dinogeo.errors import CheckpointError, ConfigError
from dinogeo.models.backbone import Backbone, create_backbone
from dinogeo.models.init_weights import backbone_file_state
from dinogeo.models.materialise import assign_weights, materialise_empty, meta_backbone
from dinogeo.ssl.ema import copy_weights
from dinogeo.ssl.fsdp_load import load_from_rank0, read_on_rank0
from dinogeo.ssl.gram_teacher import GramTeacher
from dinogeo.ssl.task_config import GramConfig, InitConfig

__all__ = ["DeferredStart", "fill_deferred", "initial_backbone", "start_backbones"]


def _hint(arch: str, in_chans: int) -> str:
    return (
        f" (the {arch!r} backbone with {in_chans} bands; the run's model.arch and "
        "data.bands must match the checkpoint)"
    )


def initial_backbone(
    arch: str,
    in_chans: int,
    init: InitConfig,
    band_names: list[str] | None,
    **kwargs: Any,
) -> Backbone:
    """The student backbone: random, or built on the meta device and given a file's weights.

    From a file, no random initialisation runs and the (memory-mapped) tensors become the weights
    without a copy (:func:`~dinogeo.models.materialise.assign_weights`).

    Args:
        arch: the backbone architecture.
        in_chans: its input bands.
        init: the start point (``official_checkpoint`` or ``backbone`` file, or neither).
        band_names: the run's bands (to expand official RGB weights).
        **kwargs: further ``create_backbone`` options.

    Raises:
        CheckpointError: the file does not fit the architecture or the bands.
    """
    path = init.official_checkpoint or init.backbone
    if not path:
        return create_backbone(arch, in_chans, **kwargs)
    bands = band_names if init.official_checkpoint else None
    state = backbone_file_state(path, arch, band_names=bands)
    backbone = meta_backbone(arch, in_chans, **kwargs)
    if any(k.startswith("local_cls_norm.") for k in state):
        backbone.add_local_cls_norm()  # the 7B / SAT ViT-L norm of local crops' cls tokens
    try:
        assign_weights(backbone, state, source=str(path))
    except CheckpointError as err:
        raise CheckpointError(f"{err}{_hint(arch, in_chans)}") from err
    return backbone


@dataclass(frozen=True)
class DeferredStart:
    """What :func:`fill_deferred` loads into backbones left on the meta device.

    Args:
        arch: the backbone architecture.
        init: the start point of the student (and of the teachers, copied from it).
        gram_cfg: the Gram anchoring settings (its own ``ckpt``, ``from_initial``).
        band_names: the run's bands (to expand official RGB weights).
        start: the student's start file is deferred.
        gram: the Gram teacher's own file (``gram_cfg.ckpt``) is deferred.
    """

    arch: str
    init: InitConfig
    gram_cfg: GramConfig
    band_names: list[str] | None
    start: bool
    gram: bool


def start_backbones(
    arch: str,
    in_chans: int,
    init: InitConfig,
    gram_cfg: GramConfig,
    band_names: list[str] | None,
    **kwargs: Any,
) -> tuple[Backbone, GramTeacher | None, DeferredStart]:
    """The student backbone and the Gram teacher at their start, and what is left to load.

    With ``init.load_on_rank0`` the backbones with a start file stay on the meta device and the
    returned plan says what :func:`fill_deferred` loads once the strategy is known.

    Args:
        arch: the backbone architecture.
        in_chans: its input bands.
        init: the start point.
        gram_cfg: the Gram anchoring settings (None teacher when disabled).
        band_names: the run's bands (to expand official RGB weights).
        **kwargs: further ``create_backbone`` options.

    Raises:
        ConfigError: both ``init.official_checkpoint`` and ``init.backbone`` are set.
        CheckpointError: a file does not fit the architecture or the bands.
    """
    if init.official_checkpoint and init.backbone:
        raise ConfigError(
            "init.official_checkpoint and init.backbone are both set: choose one start point"
        )
    start = init.official_checkpoint or init.backbone
    plan = DeferredStart(
        arch,
        init,
        gram_cfg,
        band_names,
        start=bool(start) and init.load_on_rank0,
        gram=bool(gram_cfg.enabled and gram_cfg.ckpt) and init.load_on_rank0,
    )
    if plan.start:
        backbone = meta_backbone(arch, in_chans, **kwargs)
    else:
        backbone = initial_backbone(arch, in_chans, init, band_names, **kwargs)
    if not gram_cfg.enabled:
        return backbone, None, plan
    gram = GramTeacher(
        meta_backbone(arch, in_chans, **kwargs) if plan.gram else backbone,
        first_update=gram_cfg.first_update,
        update_frequency=gram_cfg.update_frequency,
        max_updates=gram_cfg.max_updates,
        share=not gram_cfg.ckpt,
    )
    deferred = plan.start or plan.gram  # fill_deferred loads
    if gram_cfg.ckpt and not deferred:
        gram.load_file(gram_cfg.ckpt, band_names=band_names)
    elif gram_cfg.from_initial and not deferred:
        gram.copy_from(backbone)  # shared: marks it initialised, no copy
    return backbone, gram, plan


def fill_deferred(
    student: Backbone,
    teacher: Backbone,
    gram: GramTeacher | None,
    plan: DeferredStart,
    *,
    shard: Callable[[], None] | None,
    device: torch.device,
) -> None:
    """Fill meta backbones: read on rank 0, shard, materialise empty, broadcast.

    The start file gives the student's weights; the EMA teacher (and the Gram teacher unless it
    has a file of its own) are copied from the student shard by shard, as the recipe starts them
    equal.

    Args:
        student: the student backbone.
        teacher: the EMA teacher backbone.
        gram: the Gram teacher, if any.
        plan: what is deferred and from which files.
        shard: shards the task's modules (FSDP2), or None without FSDP.
        device: where the empty backbones are materialised.

    Raises:
        CheckpointError: a file does not fit the architecture or the bands.
    """
    own_gram = plan.gram and gram is not None
    copies = [teacher] if gram is None or plan.gram else [teacher, gram.backbone]
    hint = _hint(plan.arch, student.in_chans)
    state: dict[str, Tensor] = {}
    gram_state: dict[str, Tensor] = {}
    if plan.start:
        official = plan.init.official_checkpoint
        path = official or plan.init.backbone or ""
        bands = plan.band_names if official else None
        state = read_on_rank0(path, plan.arch, [student, *copies], band_names=bands, hint=hint)
    if own_gram and gram is not None:
        gram_state = read_on_rank0(
            plan.gram_cfg.ckpt or "",
            plan.arch,
            [gram.backbone],
            band_names=plan.band_names,
            hint=hint,
        )
    if shard is not None:
        shard()
    for backbone in (student, teacher, gram.backbone if gram is not None else None):
        if backbone is not None and any(t.is_meta for t in backbone.parameters()):
            materialise_empty(backbone, device)
    if plan.start:
        load_from_rank0(student, state)
        state.clear()  # rank 0: drop the mapping of the file
        for backbone in copies:
            copy_weights(backbone, student)
        if gram is not None and not plan.gram and plan.gram_cfg.from_initial:
            gram.mark_loaded()
    if own_gram and gram is not None:
        load_from_rank0(gram.backbone, gram_state)
        gram_state.clear()
        gram.mark_loaded()
