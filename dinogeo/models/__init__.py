"""Backbones, weight cards, band adaptation, official checkpoints and dense decoders."""

from __future__ import annotations

from dinogeo.models.adapt import adapt_backbone, adapt_backbone_file
from dinogeo.models.backbone import Backbone, create_backbone
from dinogeo.models.backbone_file import load_backbone, save_backbone
from dinogeo.models.bands import expand_bands, select_bands
from dinogeo.models.card import WeightCard, check_bands, create_backbone_from_card
from dinogeo.models.decoders import DPTDecoder, LinearDecoder, dpt_layer_indices
from dinogeo.models.official import load_official_dinov3
from dinogeo.models.registry import list_archs

__all__ = [
    "Backbone",
    "DPTDecoder",
    "LinearDecoder",
    "WeightCard",
    "adapt_backbone",
    "adapt_backbone_file",
    "check_bands",
    "create_backbone",
    "create_backbone_from_card",
    "dpt_layer_indices",
    "expand_bands",
    "list_archs",
    "load_backbone",
    "load_official_dinov3",
    "save_backbone",
    "select_bands",
]
