"""One student's distillation losses against shared teacher targets (no Gram).

As the official ``MultiDistillationMetaArch``: the student sees the global crops **unmasked**
(the iBOT term compares its patch tokens at the selected positions with the teacher's) and the
local crops; DINO (local and global pair-weighted) + iBOT + KoLeo per global crop on the
student's pre-head cls features (per rank, as the official distillation).
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from dinogeo.models.backbone import Backbone
from dinogeo.ssl.dino_loss import DINOLoss
from dinogeo.ssl.distill_teacher import TeacherTargets
from dinogeo.ssl.ibot_loss import iBOTPatchLoss
from dinogeo.ssl.koleo_loss import koleo_loss
from dinogeo.ssl.module_step import StepOutput
from dinogeo.ssl.monitor import embedding_health, mean_entropy
from dinogeo.ssl.task_config import LossConfig

__all__ = ["distill_losses"]


def distill_losses(
    student: nn.ModuleDict,
    targets: TeacherTargets,
    *,
    dino_loss: DINOLoss,
    ibot_loss: iBOTPatchLoss,
    loss_cfg: LossConfig,
    prefix: str = "",
) -> StepOutput:
    """DINO + iBOT + KoLeo of one student against the teacher's targets.

    Args:
        student: ``{"backbone", "dino_head", "ibot_head"}``.
        targets: the teacher's targets for this student's chunk of the batch.
        dino_loss: the DINO loss module.
        ibot_loss: the iBOT loss module.
        loss_cfg: loss weights.
        prefix: prepended to the log names (e.g. ``"vits/"``).

    Returns:
        The total loss and the values to log.
    """
    backbone = cast(Backbone, student["backbone"])
    n_global, batch_size = 2, targets.batch_size
    s_global = backbone.forward_features(targets.global_crops)
    s_cls = s_global["x_norm_clstoken"]
    cls_tokens = [s_cls]
    n_local = 0
    if targets.local_crops.numel():
        n_local = targets.local_crops.shape[0] // batch_size
        cls_tokens.append(backbone.forward_features(targets.local_crops)["x_norm_clstoken"])
    s_dino = student["dino_head"](torch.cat(cls_tokens))
    s_dino_global = s_dino[: n_global * batch_size].view(n_global, batch_size, -1)
    s_dino_local = (
        s_dino[n_global * batch_size :].view(n_local, batch_size, -1) if n_local else None
    )
    s_patch = s_global["x_norm_patchtokens"].flatten(0, 1)[targets.mask_indices]
    s_ibot = student["ibot_head"](s_patch)
    dino = dino_loss(s_dino_global, s_dino_local, targets.dino, local_weight=loss_cfg.local_weight)
    ibot = ibot_loss(s_ibot, targets.ibot, targets.masks_weight, targets.n_masked_images)
    koleo = sum(
        (koleo_loss(crop) for crop in s_cls.float().chunk(n_global)),
        s_cls.new_zeros((), dtype=torch.float32),
    )
    weights = {"dino": loss_cfg.dino_weight, "ibot": loss_cfg.ibot_weight}
    weights["koleo"] = loss_cfg.koleo_weight
    terms = {**dino, "ibot": ibot, "koleo": koleo}
    total = sum((w * terms[name] for name, w in weights.items()), koleo.new_zeros(()))
    logs = {f"loss/{k}": v.detach() for k, v in {**terms, "total": total}.items()}
    with torch.no_grad():
        agree = (s_dino_global.argmax(-1) == targets.dino.argmax(-1)).float().mean()
        logs["health/prototype_agreement"] = agree
        logs.update({f"health/{k}": v for k, v in embedding_health(s_cls.detach()).items()})
        probs = F.softmax(s_dino_global.flatten(0, 1).float() / loss_cfg.student_temp, -1)
        logs["health/student_entropy"] = mean_entropy(probs)
    return StepOutput(loss=total, logs={f"{prefix}{k}": v for k, v in logs.items()})
