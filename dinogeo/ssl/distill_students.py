"""The students of a distillation run: which ones this rank trains, their subgroups, their build.

On one process every student trains on the one rank. On several processes each student owns a
subgroup of ranks (``StudentConfig.ranks``, in order), as the official multi-student
distillation; every rank creates every subgroup, in the same order, as ``torch.distributed``
requires.
"""

from __future__ import annotations

import copy
import zlib
from typing import cast

import torch
import torch.distributed as dist
from torch import nn

from dinogeo.errors import ConfigError
from dinogeo.models.backbone import create_backbone
from dinogeo.ssl.checkpointing import sample_seed
from dinogeo.ssl.dino_head import build_head
from dinogeo.ssl.distill_config import StudentConfig
from dinogeo.ssl.distill_teacher import Subgroups
from dinogeo.ssl.task_config import DINOHeadConfig

__all__ = ["build_student", "local_students", "rank_world", "student_patch", "student_subgroups"]


def rank_world() -> tuple[int, int]:
    """This process's rank and the world size (``(0, 1)`` when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def local_students(cfgs: list[StudentConfig], rank: int, world: int) -> list[StudentConfig]:
    """The students rank ``rank`` trains: all on one process, its subgroup's otherwise.

    Raises:
        ConfigError: if the students' ranks do not add up to the world size.
    """
    if world == 1:
        return list(cfgs)
    total = sum(s.ranks for s in cfgs)
    if total != world or any(s.ranks < 1 for s in cfgs):
        raise ConfigError(
            f"the students' ranks {[s.ranks for s in cfgs]} add up to {total} "
            f"but the run has {world} processes: give each student >= 1 rank, {world} in all"
        )
    start = 0
    for cfg in cfgs:
        if start <= rank < start + cfg.ranks:
            return [cfg]
        start += cfg.ranks
    raise AssertionError("unreachable: ranks cover the world")


def student_subgroups(cfgs: list[StudentConfig], rank: int, world: int) -> Subgroups:
    """Create every student's process group (all ranks, same order); return this rank's."""
    local = local_students(cfgs, rank, world)[0]
    start, own = 0, None
    for cfg in cfgs:
        ranks = list(range(start, start + cfg.ranks))
        group = dist.new_group(ranks)
        if cfg.name == local.name:
            own = Subgroups(cast(dist.ProcessGroup, group), len(ranks), rank - start, world)
        start += cfg.ranks
    return cast(Subgroups, own)


def build_student(
    cfg: StudentConfig,
    in_chans: int,
    dino_head: DINOHeadConfig,
    ibot_head: DINOHeadConfig,
    seed: int,
) -> tuple[nn.ModuleDict, nn.ModuleDict]:
    """A student ``{"backbone", "dino_head", "ibot_head"}`` and its frozen EMA copy.

    Its initial weights depend on ``(seed, its name)`` only, not on the other students or on
    which rank it lands. The mask token is frozen: the students' input is never masked.
    """
    torch.manual_seed(sample_seed(seed, zlib.crc32(cfg.name.encode())))
    backbone = create_backbone(
        cfg.arch,
        in_chans,
        img_size=cfg.img_size,
        drop_path_rate=cfg.drop_path_rate,
        rope_rescale_coords=cfg.rope_rescale_coords,
        **dict(cfg.backbone_kwargs),
    )
    student = nn.ModuleDict(
        {
            "backbone": backbone,
            "dino_head": build_head(backbone.embed_dim, dino_head),
            "ibot_head": build_head(backbone.embed_dim, ibot_head),
        }
    )
    backbone.mask_token.requires_grad_(False)
    ema = copy.deepcopy(student).requires_grad_(False).eval()
    return student, ema


def student_patch(cfg: StudentConfig) -> int:
    """A student's patch size (read on the meta device: no memory)."""
    with torch.device("meta"):
        return create_backbone(cfg.arch, 1, **dict(cfg.backbone_kwargs)).patch_size
