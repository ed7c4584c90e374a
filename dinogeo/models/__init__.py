"""Backbones, weight cards, band adaptation, official checkpoints and dense decoders."""

from __future__ import annotations

from dinogeo.models.backbone import Backbone, create_backbone
from dinogeo.models.card import (
    WeightCard,
    check_bands,
    create_backbone_from_card,
    load_backbone,
    save_backbone,
)
from dinogeo.models.registry import list_archs

__all__ = [
    "Backbone",
    "WeightCard",
    "check_bands",
    "create_backbone",
    "create_backbone_from_card",
    "list_archs",
    "load_backbone",
    "save_backbone",
]
