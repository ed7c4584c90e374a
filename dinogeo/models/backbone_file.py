"""Backbone files: weights and their weight card saved together, loaded without running code.

Files:

* ``.safetensors`` (what :func:`save_backbone` writes): tensors plus the card JSON in the
  header metadata under ``"dinogeo_card"``.
* ``.pt`` / ``.ckpt`` (dinogeo or Lightning checkpoints), read with ``torch.load(weights_only=True)``.
  They must hold the card (a dict or JSON string) under ``"dinogeo_card"``; the weights are the
  Backbone state dict at the top level, under ``"backbone"`` or under ``"state_dict"`` (Lightning)
  with a key prefix. The prefix is taken from ``"dinogeo_backbone_prefix"`` when present,
  otherwise found from the keys (a unique ``...vit.cls_token``, or the EMA ``teacher``).

Loading never executes code from the file. Official Meta DINOv3 files, which carry no card, load
with :func:`dinogeo.models.official.load_official_dinov3`.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from dinogeo.errors import BandMismatchError, CheckpointError
from dinogeo.models.backbone import Backbone
from dinogeo.models.card import WeightCard, architecture_kwargs, create_backbone_from_card
from dinogeo.models.materialise import assign_weights
from dinogeo.models.official import safe_torch_load

__all__ = ["CARD_KEY", "PREFIX_KEY", "load_backbone", "save_backbone"]

#: the key of the weight card in a file's metadata or checkpoint dict
CARD_KEY = "dinogeo_card"
#: the checkpoint key naming the backbone's state-dict prefix
PREFIX_KEY = "dinogeo_backbone_prefix"
_SAFE_SUFFIXES = (".safetensors",)
_TORCH_SUFFIXES = (".pt", ".pth", ".ckpt")


def save_backbone(path: str | Path, backbone: Backbone, card: WeightCard) -> None:
    """Save backbone weights and their card as one safetensors file (written atomically).

    The card's ``backbone_kwargs`` are set from the backbone so that :func:`load_backbone`
    rebuilds exactly this architecture.

    Args:
        path: output file; ``.safetensors`` is the expected suffix.
        backbone: the backbone to save.
        card: its weight card.

    Raises:
        CheckpointError: if the card does not describe the backbone.
        BandMismatchError: if the card's band count differs from the backbone's.
    """
    path = Path(path)
    if card.arch != backbone.arch or card.embed_dim != backbone.embed_dim:
        raise CheckpointError(
            f"weight card describes {card.arch!r} (width {card.embed_dim}) but the backbone is "
            f"{backbone.arch!r} (width {backbone.embed_dim}): make the card with "
            "WeightCard.from_backbone"
        )
    if card.patch_size != backbone.patch_size:
        raise CheckpointError(
            f"weight card patch size {card.patch_size} differs from the backbone's "
            f"{backbone.patch_size}: make the card with WeightCard.from_backbone"
        )
    if card.in_chans != backbone.in_chans:
        raise BandMismatchError(
            f"weight card lists {card.in_chans} bands {card.band_names} but the backbone takes "
            f"{backbone.in_chans}: give one band name per input band"
        )
    card = dataclasses.replace(card, backbone_kwargs=architecture_kwargs(backbone))
    tensors = {k: v.detach().cpu().contiguous() for k, v in backbone.state_dict().items()}
    metadata = {CARD_KEY: card.to_json(), "format": "dinogeo-backbone", "format_version": "1"}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _find_prefix(weights: Mapping[str, Any], path: Path, prefix: str | None) -> str:
    if prefix is not None:
        return prefix
    marker = "vit.cls_token"
    candidates = sorted(k[: -len(marker)] for k in weights if k.endswith(marker))
    if len(candidates) == 1:
        return candidates[0]
    teachers = [c for c in candidates if "teacher" in c and "gram" not in c]
    if len(teachers) == 1:
        return teachers[0]
    if not candidates:
        raise CheckpointError(
            f"{path} has no dinogeo backbone weights (no '*vit.cls_token' key): for Meta's "
            "official DINOv3 files use dinogeo.models.load_official_dinov3"
        )
    raise CheckpointError(
        f"{path} holds several backbones with key prefixes {candidates}: pass prefix=... to "
        "load_backbone to choose one"
    )


def load_backbone(path: str | Path, *, prefix: str | None = None) -> tuple[Backbone, WeightCard]:
    """Load a backbone and its weight card without executing code from the file.

    Args:
        path: a ``.safetensors`` file from :func:`save_backbone`, or a ``.pt``/``.pth``/``.ckpt``
            dinogeo or Lightning checkpoint carrying a card under ``"dinogeo_card"``.
        prefix: key prefix of the backbone in a checkpoint's state dict (found automatically
            when omitted).

    Returns:
        The backbone in eval mode and its card.

    Raises:
        CheckpointError: if the file is missing, unreadable, has no card or does not match it.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"backbone file {path} does not exist: check the path")
    if path.suffix.lower() in _SAFE_SUFFIXES:
        try:
            with safe_open(str(path), framework="pt", device="cpu") as handle:
                metadata = handle.metadata() or {}
                weights: dict[str, Tensor] = {k: handle.get_tensor(k) for k in handle.keys()}
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"{path} is not a readable safetensors file: {exc}") from exc
        if CARD_KEY not in metadata:
            raise CheckpointError(
                f"{path} has no dinogeo weight card in its metadata: save it with "
                "dinogeo.models.save_backbone (official Meta weights: load_official_dinov3)"
            )
        card = WeightCard.from_json(metadata[CARD_KEY], source_file=str(path))
        chosen = prefix or ""
    elif path.suffix.lower() in _TORCH_SUFFIXES:
        ckpt = safe_torch_load(path)
        if not isinstance(ckpt, dict) or CARD_KEY not in ckpt:
            raise CheckpointError(
                f"{path} carries no dinogeo weight card (key {CARD_KEY!r}): official Meta "
                "DINOv3 files load with load_official_dinov3; other files need a card"
            )
        raw_card = ckpt[CARD_KEY]
        if isinstance(raw_card, str):
            card = WeightCard.from_json(raw_card, source_file=str(path))
        elif isinstance(raw_card, dict):
            card = WeightCard.from_dict(raw_card, source_file=str(path))
        else:
            raise CheckpointError(f"{path}: {CARD_KEY!r} must be a dict or JSON text")
        if isinstance(ckpt.get("state_dict"), dict):
            weights = ckpt["state_dict"]
        elif isinstance(ckpt.get("backbone"), dict):
            weights = ckpt["backbone"]
        else:
            weights = {k: v for k, v in ckpt.items() if isinstance(v, Tensor)}
        chosen = _find_prefix(weights, path, prefix or ckpt.get(PREFIX_KEY))
    else:
        raise CheckpointError(
            f"{path}: unknown backbone file type {path.suffix!r}; use .safetensors "
            "(save_backbone) or a .pt/.ckpt checkpoint"
        )
    state = {k[len(chosen) :]: v for k, v in weights.items() if k.startswith(chosen)}
    if path.suffix.lower() in _TORCH_SUFFIXES:
        # read memory-mapped (the optimizer state is never read), but copied: training
        # overwrites its .ckpt files in place, which would pull the pages from under a mapping
        state = {k: v.clone() for k, v in state.items()}
    backbone = create_backbone_from_card(card, initialise=False)
    try:
        assign_weights(backbone, state, source=str(path))
    except CheckpointError as exc:
        raise CheckpointError(
            f"{path} does not match its weight card ({card.arch}, {card.in_chans} bands): "
            f"{exc}; the file is damaged or the card was written for another model"
        ) from exc
    return backbone.eval(), card
