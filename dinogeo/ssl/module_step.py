"""The DINOv3 loss computation for one multi-crop batch (used by :class:`SSLTask`).

Teacher: the EMA backbone on the two *unmasked* global crops, its DINO head on the cls tokens
and its iBOT head on the patch tokens at the masked positions, both centred with
Sinkhorn-Knopp. Student: the backbone on the *masked* global crops and on the local crops, the
DINO head on every cls token and the iBOT head on the masked patch tokens. Losses: DINO
(local and global pair-weighted), iBOT, KoLeo per global crop on the student's pre-head cls
features and, when a Gram teacher is ready and its weight is positive, the Gram loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dinogeo.models.backbone import Backbone
from dinogeo.ssl.batch_types import MultiCropBatch
from dinogeo.ssl.dino_loss import DINOLoss
from dinogeo.ssl.gram_loss import gram_loss
from dinogeo.ssl.gram_teacher import GramTeacher
from dinogeo.ssl.ibot_loss import iBOTPatchLoss
from dinogeo.ssl.koleo_loss import koleo_loss, koleo_loss_distributed
from dinogeo.ssl.monitor import embedding_health, mean_entropy
from dinogeo.ssl.sinkhorn import sinkhorn_knopp
from dinogeo.ssl.task_config import GramConfig, LossConfig

__all__ = ["StepOutput", "ssl_losses"]


@dataclass
class StepOutput:
    """Result of :func:`ssl_losses`.

    Attributes:
        loss: the total loss to back-propagate.
        logs: scalar tensors to log (``loss/*`` and ``health/*``), detached.
    """

    loss: Tensor
    logs: dict[str, Tensor]


def _koleo(features: Tensor, n_global: int, cfg: LossConfig) -> Tensor:
    total = features.new_zeros((), dtype=torch.float32)
    for crop in features.float().chunk(n_global):
        if cfg.koleo_group_size > 0:
            total = total + koleo_loss_distributed(crop, cfg.koleo_group_size)
        else:
            total = total + koleo_loss(crop)
    return total


def ssl_losses(
    student: nn.ModuleDict,
    teacher: nn.ModuleDict,
    batch: MultiCropBatch,
    *,
    dino_loss: DINOLoss,
    ibot_loss: iBOTPatchLoss,
    loss_cfg: LossConfig,
    teacher_temp: float,
    gram_teacher: GramTeacher | None = None,
    gram_cfg: GramConfig | None = None,
    gram_weight: float = 0.0,
    local_weight: float | None = None,
    with_health: bool = True,
) -> StepOutput:
    """Compute the DINOv3 losses of one batch from :func:`~dinogeo.ssl.collate.collate_multicrop`.

    Args:
        student: ``{"backbone", "dino_head", "ibot_head"}``.
        teacher: the EMA copy with the same keys (run without gradients).
        batch: the collated multi-crop batch.
        dino_loss: the DINO loss module.
        ibot_loss: the iBOT loss module.
        loss_cfg: loss weights and Sinkhorn-Knopp settings.
        teacher_temp: this step's teacher temperature.
        gram_teacher: the frozen Gram teacher, if Gram anchoring is on.
        gram_cfg: Gram options (``remove_neg``, ``img_level``).
        gram_weight: this step's Gram loss weight.
        local_weight: this step's lambda_local (default ``loss_cfg.local_weight``).
        with_health: also compute the collapse indicators.

    Returns:
        The total loss and the values to log.
    """
    global_crops: Tensor = batch["global_crops"]
    local_crops: Tensor = batch["local_crops"]
    masks: Tensor = batch["masks"]
    mask_indices: Tensor = batch["mask_indices"]
    n_global = 2
    batch_size = global_crops.shape[0] // n_global
    n_local = local_crops.shape[0] // max(batch_size, 1) if local_crops.numel() else 0
    s_backbone = cast(Backbone, student["backbone"])
    t_backbone = cast(Backbone, teacher["backbone"])

    with torch.no_grad():
        t_out = t_backbone.forward_features(global_crops)
        t_cls = t_out["x_norm_clstoken"]
        t_patch = t_out["x_norm_patchtokens"]
        t_dino = teacher["dino_head"](t_cls)
        t_ibot = teacher["ibot_head"](t_patch.flatten(0, 1)[mask_indices])
        dino_targets = sinkhorn_knopp(t_dino, teacher_temp, loss_cfg.sinkhorn_iterations)
        ibot_targets = sinkhorn_knopp(t_ibot, teacher_temp, loss_cfg.sinkhorn_iterations)

    s_global = s_backbone.forward_features(global_crops, masks=masks)
    s_cls = s_global["x_norm_clstoken"]
    s_patch = s_global["x_norm_patchtokens"]
    cls_tokens = [s_cls]
    if n_local:
        local = s_backbone.forward_features(local_crops, local_crops=True)
        cls_tokens.append(local["x_norm_clstoken"])
    s_dino = student["dino_head"](torch.cat(cls_tokens))
    s_dino_global = s_dino[: n_global * batch_size].view(n_global, batch_size, -1)
    s_dino_local = (
        s_dino[n_global * batch_size :].view(n_local, batch_size, -1) if n_local else None
    )
    s_ibot = student["ibot_head"](s_patch.flatten(0, 1)[mask_indices])

    dino = dino_loss(
        s_dino_global,
        s_dino_local,
        dino_targets.view(n_global, batch_size, -1),
        local_weight=loss_cfg.local_weight if local_weight is None else local_weight,
    )
    ibot = ibot_loss(
        s_ibot, ibot_targets, batch["masks_weight"].to(s_ibot.device), batch["n_masked_images"]
    )
    koleo = _koleo(s_cls, n_global, loss_cfg)
    total = (
        loss_cfg.dino_weight * dino["dino"]
        + loss_cfg.ibot_weight * ibot
        + loss_cfg.koleo_weight * koleo
    )
    logs: dict[str, Tensor] = {
        "loss/dino": dino["dino"].detach(),
        "loss/dino_local": dino["dino_local"].detach(),
        "loss/dino_global": dino["dino_global"].detach(),
        "loss/ibot": ibot.detach(),
        "loss/koleo": koleo.detach(),
    }
    if gram_teacher is not None and gram_teacher.ready and gram_weight > 0:
        cfg = gram_cfg or GramConfig()
        grid = (
            global_crops.shape[-2] // s_backbone.patch_size,
            global_crops.shape[-1] // s_backbone.patch_size,
        )
        gram_crops = batch.get("gram_crops")
        source = gram_crops if gram_crops is not None else global_crops
        g_patch = gram_teacher.patch_tokens(source, grid)
        gram = gram_loss(s_patch, g_patch, img_level=cfg.img_level, remove_neg=cfg.remove_neg)
        total = total + gram_weight * gram
        logs["loss/gram"] = gram.detach()
    logs["loss/total"] = total.detach()
    if with_health:
        probs = F.softmax(t_dino.float() / teacher_temp, dim=-1)
        logs["health/teacher_entropy"] = mean_entropy(probs)
        logs["health/teacher_entropy_norm"] = logs["health/teacher_entropy"] / math.log(
            max(probs.shape[-1], 2)
        )
        logs["health/target_entropy"] = mean_entropy(dino_targets)
        logs.update({f"health/{k}": v for k, v in embedding_health(t_cls).items()})
    return StepOutput(loss=total, logs=logs)
