"""The DINOv3 self-supervised recipe: heads, losses, masking, augmentation and optimisation."""

from dinogeo.ssl.augment import MultiCropAugmentation, Photometric
from dinogeo.ssl.collate import collate_multicrop
from dinogeo.ssl.crop_mix import CropMix, CropMixEntry
from dinogeo.ssl.dino_head import DINOHead
from dinogeo.ssl.dino_loss import DINOLoss
from dinogeo.ssl.ema import ema_update
from dinogeo.ssl.grad_clip import clip_gradients_per_module
from dinogeo.ssl.gram_loss import gram_loss, resize_token_grid
from dinogeo.ssl.ibot_loss import iBOTPatchLoss
from dinogeo.ssl.koleo_loss import koleo_loss, koleo_loss_distributed
from dinogeo.ssl.masking import BlockMaskGenerator, make_ibot_masks
from dinogeo.ssl.param_groups import build_param_groups, cancel_last_layer_gradients
from dinogeo.ssl.schedules import lr_scaling, warmup_constant, warmup_cosine
from dinogeo.ssl.sinkhorn import sinkhorn_knopp

__all__ = [
    "BlockMaskGenerator",
    "CropMix",
    "CropMixEntry",
    "DINOHead",
    "DINOLoss",
    "MultiCropAugmentation",
    "Photometric",
    "build_param_groups",
    "cancel_last_layer_gradients",
    "clip_gradients_per_module",
    "collate_multicrop",
    "ema_update",
    "gram_loss",
    "iBOTPatchLoss",
    "koleo_loss",
    "koleo_loss_distributed",
    "lr_scaling",
    "make_ibot_masks",
    "resize_token_grid",
    "sinkhorn_knopp",
    "warmup_constant",
    "warmup_cosine",
]
