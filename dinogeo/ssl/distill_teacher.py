"""The frozen teacher of distillation: loading it, and its DINO/iBOT targets shared by all students.

As in the official multi-student distillation (``MultiDistillationMetaArch.get_teacher_output``):
each rank runs the teacher backbone and the heads' MLPs (up to the L2-normalised bottleneck) on
its own share of the global batch, once per step; the bottlenecks (and the crops and masks) are
all-gathered and every student subgroup takes its chunk of the global batch; the prototype
layers and Sinkhorn-Knopp (statistics over the subgroup) run after the gather. On one process
the gather is the identity and every student of the rank reuses the same targets.

A student may have another patch size than the teacher: the teacher's patch tokens are then
resampled (bicubic, as the Gram teacher's) onto the students' token grid before the iBOT head.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from dinogeo.errors import CheckpointError, ConfigError
from dinogeo.models.backbone import Backbone
from dinogeo.models.backbone_file import load_backbone
from dinogeo.models.card import WeightCard
from dinogeo.models.official import safe_torch_load
from dinogeo.ssl.batch_types import MultiCropBatch
from dinogeo.ssl.dino_head import DINOHead
from dinogeo.ssl.gram_loss import resize_token_grid
from dinogeo.ssl.sinkhorn import sinkhorn_knopp
from dinogeo.ssl.task_config import DINOHeadConfig

__all__ = [
    "LoadedTeacher",
    "Subgroups",
    "TeacherTargets",
    "file_sha256",
    "head_config_of",
    "load_teacher",
    "teacher_targets",
]

HEAD_PREFIXES = {"dino_head": "teacher.dino_head.", "ibot_head": "teacher.ibot_head."}


def file_sha256(path: str | Path) -> str:
    """The sha256 hex digest of a file (read in 8 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 23), b""):
            digest.update(block)
    return digest.hexdigest()


def head_config_of(state: dict[str, Tensor]) -> DINOHeadConfig:
    """The :class:`DINOHeadConfig` of a DINO/iBOT head from its weights (``mlp.*``, ``last_layer``)."""
    weights = sorted(
        (int(k.split(".")[1]), v)
        for k, v in state.items()
        if k.startswith("mlp.") and k.endswith(".weight")
    )
    if not weights or "last_layer.weight" not in state:
        raise CheckpointError(f"head weights {sorted(state)[:4]} are not a DINOHead's")
    out_dim, bottleneck = state["last_layer.weight"].shape
    hidden = int(weights[0][1].shape[0]) if len(weights) > 1 else 2048
    return DINOHeadConfig(
        out_dim=int(out_dim),
        hidden_dim=hidden,
        bottleneck_dim=int(bottleneck),
        nlayers=len(weights),
    )


@dataclass
class LoadedTeacher:
    """A teacher read from a file.

    Attributes:
        backbone: the backbone (frozen, eval mode).
        card: its weight card.
        heads: ``{"dino_head", "ibot_head"}`` when the file has them, else ``None``.
        provenance: ``{"path", "sha256", "arch", "config_hash", "embed_dim", "patch_size",
            "depth"}``, recorded in every student's weight card.
    """

    backbone: Backbone
    card: WeightCard
    heads: dict[str, DINOHead] | None
    provenance: dict[str, Any]


def load_teacher(path: str | Path) -> LoadedTeacher:
    """Load the teacher backbone, its weight card and its DINO/iBOT heads when the file has them.

    Args:
        path: a dinogeo backbone (``.safetensors``, no heads) or a ``dinogeo pretrain``
            checkpoint (``.ckpt``: the EMA teacher backbone and heads).

    Raises:
        CheckpointError: if the file is missing, has no weight card, or its heads are damaged.
    """
    src = Path(path)
    if not str(path) or not src.is_file():
        raise CheckpointError(
            f"teacher file {str(path)!r} does not exist: set model.teacher.path to a backbone "
            "(.safetensors) or a dinogeo pretrain checkpoint (.ckpt)"
        )
    backbone, card = load_backbone(src)
    backbone.requires_grad_(False)
    heads: dict[str, DINOHead] | None = None
    if src.suffix.lower() == ".ckpt":
        state = safe_torch_load(src).get("state_dict", {})
        found = {}
        for name, prefix in HEAD_PREFIXES.items():
            sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            if sub:
                cfg = head_config_of(sub)
                head = DINOHead(
                    backbone.embed_dim, cfg.out_dim, cfg.hidden_dim, cfg.bottleneck_dim, cfg.nlayers
                )
                try:
                    head.load_state_dict(sub)
                except RuntimeError as err:
                    raise CheckpointError(
                        f"{src}: the teacher's {name} does not load ({err})"
                    ) from err
                found[name] = head.requires_grad_(False)
        if len(found) == 2:
            heads = found
    provenance = {
        "path": str(src.resolve()),
        "sha256": file_sha256(src),
        "arch": card.arch,
        "config_hash": card.config_hash,
        "embed_dim": card.embed_dim,
        "patch_size": card.patch_size,
        "depth": backbone.depth,
        "heads": "from the file" if heads else "warmed up on the frozen teacher",
    }
    return LoadedTeacher(backbone=backbone.eval(), card=card, heads=heads, provenance=provenance)


@dataclass(frozen=True)
class Subgroups:
    """This rank's place among the student subgroups.

    Attributes:
        group: the process group of this rank's student (``None``: not distributed).
        size: ranks in that subgroup.
        rank: this rank's index in the subgroup.
        world: ranks in all (the teacher's data-parallel group).
    """

    group: dist.ProcessGroup | None = None
    size: int = 1
    rank: int = 0
    world: int = 1


@dataclass
class TeacherTargets:
    """The teacher's targets for one student subgroup's chunk of the global batch.

    Attributes:
        global_crops: ``(2 B, C, H, W)`` global crops of the chunk (the students' input, unmasked).
        local_crops: ``(n_local B, C, h, w)`` local crops (``(0, C, 0, 0)`` without).
        dino: ``(2, B, K)`` Sinkhorn-Knopp targets of the global crops.
        ibot: ``(M, K)`` targets of the patch tokens at ``mask_indices``.
        mask_indices: flat indices into the students' ``(2 B * N)`` patch tokens.
        masks_weight: ``1/M_i`` of each selected token's image.
        n_masked_images: the iBOT normaliser (``2 B``).
        dino_logits: ``(2 B, K)`` the teacher's DINO scores (for the entropy log).
    """

    global_crops: Tensor
    local_crops: Tensor
    dino: Tensor
    ibot: Tensor
    mask_indices: Tensor
    masks_weight: Tensor
    n_masked_images: int
    dino_logits: Tensor

    @property
    def batch_size(self) -> int:
        """Images in the chunk."""
        return int(self.global_crops.shape[0] // 2)


def _to_subgroup(x: Tensor, sub: Subgroups) -> Tensor:
    """All-gather ``(n_crops, b, ...)`` over the world along dim 1, keep this rank's chunk.

    The global batch is the rank-ordered concatenation of the ranks' shares; subgroup rank ``s``
    of a subgroup of ``S`` ranks takes images ``[s G/S, (s+1) G/S)`` (the official
    ``broadcast_to_subgroups``).
    """
    if sub.world == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(sub.world)]
    dist.all_gather(parts, x.contiguous())
    full = torch.cat(parts, dim=1)
    return full.chunk(sub.size, dim=1)[sub.rank].contiguous()


@torch.no_grad()
def teacher_targets(
    backbone: Backbone,
    heads: nn.ModuleDict,
    batch: MultiCropBatch,
    *,
    student_patch: int,
    teacher_temp: float,
    sinkhorn_iterations: int = 3,
    subgroups: Subgroups | None = None,
) -> TeacherTargets:
    """Run the teacher once on this rank's batch and return its targets for this rank's student.

    Args:
        backbone: the frozen teacher backbone.
        heads: its ``{"dino_head", "ibot_head"}``.
        batch: this rank's batch from :func:`~dinogeo.ssl.collate.collate_multicrop`, masks
            drawn on the students' patch grid.
        student_patch: the students' patch size.
        teacher_temp: this step's teacher temperature.
        sinkhorn_iterations: Sinkhorn-Knopp rounds.
        subgroups: where this rank stands (``None``: one process).

    Returns:
        The chunk's crops and targets.
    """
    sub = subgroups or Subgroups()
    global_crops: Tensor = batch["global_crops"]
    local_crops: Tensor = batch["local_crops"]
    masks: Tensor = batch["masks"]
    n_global = 2
    b_local = global_crops.shape[0] // n_global
    height, width = global_crops.shape[-2:]
    if height % student_patch or width % student_patch:
        raise ConfigError(
            f"global crops {height}x{width} are not a multiple of the students' patch size "
            f"{student_patch}: choose a data.global_size divisible by it"
        )
    grid_s = (height // student_patch, width // student_patch)
    grid_t = (height // backbone.patch_size, width // backbone.patch_size)
    out = backbone.forward_features(global_crops)
    tokens = resize_token_grid(out["x_norm_patchtokens"], grid_t, grid_s)
    dino_head, ibot_head = heads["dino_head"], heads["ibot_head"]
    cls_b = dino_head(out["x_norm_clstoken"], no_last_layer=True).view(n_global, b_local, -1)

    if sub.world == 1:
        # one process: the iBOT MLP only on the selected tokens (same values, less work)
        chunk_masks = masks
        mask_indices = batch["mask_indices"]
        patch_b = ibot_head(tokens.flatten(0, 1)[mask_indices], no_last_layer=True)
        crops_g, crops_l = global_crops, local_crops
    else:
        n_tok = tokens.shape[1]
        patch_all = ibot_head(tokens, no_last_layer=True).view(n_global, b_local, n_tok, -1)
        cls_b = _to_subgroup(cls_b, sub)
        chunk_masks = _to_subgroup(masks.view(n_global, b_local, -1), sub).flatten(0, 1)
        mask_indices = chunk_masks.flatten().nonzero().flatten()
        patch_b = _to_subgroup(patch_all, sub).flatten(0, 2)[mask_indices]
        crops_g = _to_subgroup(global_crops.unflatten(0, (n_global, b_local)), sub).flatten(0, 1)
        if local_crops.numel():
            n_loc = local_crops.shape[0] // b_local
            crops_l = _to_subgroup(local_crops.unflatten(0, (n_loc, b_local)), sub).flatten(0, 1)
        else:
            crops_l = local_crops
    b_chunk = cls_b.shape[1]
    dino_logits = dino_head(cls_b.flatten(0, 1), only_last_layer=True)
    ibot_logits = ibot_head(patch_b, only_last_layer=True)
    group = sub.group if sub.world > 1 else None
    dino = sinkhorn_knopp(dino_logits, teacher_temp, sinkhorn_iterations, group=group)
    n_masked = torch.tensor(float(mask_indices.numel()), device=ibot_logits.device)
    if sub.world > 1 and sub.size > 1:
        dist.all_reduce(n_masked, group=sub.group)
    ibot = sinkhorn_knopp(
        ibot_logits, teacher_temp, sinkhorn_iterations, n_samples=n_masked, group=group
    )
    per_image = chunk_masks.sum(dim=-1, keepdim=True).clamp(min=1).float()
    masks_weight = (1.0 / per_image).expand_as(chunk_masks)[chunk_masks]
    return TeacherTargets(
        global_crops=crops_g,
        local_crops=crops_l,
        dino=dino.view(n_global, b_chunk, -1),
        ibot=ibot,
        mask_indices=mask_indices,
        masks_weight=masks_weight.to(ibot.device),
        n_masked_images=int(chunk_masks.shape[0]),
        dino_logits=dino_logits,
    )
