"""Load Meta's official DINOv3 backbone checkpoints into a dinogeo :class:`Backbone`.

Meta's ``.pth`` files are flat backbone state dicts (spec section 1): ``cls_token``,
``storage_tokens``, ``mask_token``, ``patch_embed.proj.*``, ``rope_embed.periods``, ``norm.*``
and per block ``norm1/norm2``, ``attn.qkv.{weight,bias,bias_mask}``, ``attn.proj``,
``ls1/ls2.gamma`` and ``mlp.fc1/fc2`` (or ``mlp.w1/w2/w3``); the 7B and SAT ViT-L add
``local_cls_norm``. Training checkpoints hold the same keys under ``{"teacher": {"backbone.*"}}``.

The conversion is timm's own (``timm.models.eva.checkpoint_filter_fn``: storage tokens become
registers, LayerScale ``gamma`` is renamed, the qkv bias is split into q and v biases since the
k bias is masked to zero, SwiGLU weights are renamed). timm drops the mask token; dinogeo keeps
it in :attr:`Backbone.mask_token`, which matters for continued iBOT pretraining, and keeps the
``local_cls_norm`` of the 7B and SAT ViT-L (:attr:`Backbone.local_cls_norm`, used on local crops'
cls and register tokens in training, as in Meta's code).
RoPE periods are recomputed in float32 (Meta stores them, possibly in bfloat16).
"""

from __future__ import annotations

import pathlib
import pickle
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from timm.models.eva import checkpoint_filter_fn
from torch import Tensor

from dinogeo.errors import CheckpointError
from dinogeo.models.backbone import Backbone, empty_backbone
from dinogeo.models.bands import RGB_BANDS, BandSpec, expand_bands
from dinogeo.models.registry import ARCHS

__all__ = ["load_official_dinov3", "official_state_dict", "safe_torch_load"]

_BLOCK = re.compile(r"^blocks\.(\d+)\.")


def safe_torch_load(path: Path) -> Any:
    """``torch.load(path, weights_only=True)`` on CPU, with errors as :class:`CheckpointError`.

    Paths (common in saved hyper-parameters) are allowed; nothing that can execute code is.

    Raises:
        CheckpointError: if the file is unreadable or holds disallowed Python objects.
    """
    allowed: list[Any] = [pathlib.PosixPath, pathlib.WindowsPath, pathlib.PurePosixPath]
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path} cannot be loaded safely (weights_only=True): {_unpickling_reason(exc)}; "
            "checkpoints must hold tensors and plain Python types only"
        ) from exc
    except (RuntimeError, EOFError, OSError) as exc:
        raise CheckpointError(f"{path} is not a readable torch checkpoint: {exc}") from exc


def _unpickling_reason(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1].split("Check the documentation", 1)[0]
    return text.strip()[:300]


def official_state_dict(checkpoint: Mapping[str, Any], path: str | Path = "") -> dict[str, Tensor]:
    """Return the flat Meta backbone state dict from a ``.pth`` file's content.

    Accepts a flat backbone state dict, or a training checkpoint
    ``{"teacher": {"backbone.*": ..., "dino_head.*": ...}}`` (the teacher backbone is used).

    Raises:
        CheckpointError: if neither layout is found.
    """
    state: Mapping[str, Any] = checkpoint
    if "teacher" in checkpoint and isinstance(checkpoint["teacher"], Mapping):
        teacher = checkpoint["teacher"]
        state = {k[len("backbone.") :]: v for k, v in teacher.items() if k.startswith("backbone.")}
    elif any(k.startswith("backbone.") for k in checkpoint) and "cls_token" not in checkpoint:
        state = {
            k[len("backbone.") :]: v for k, v in checkpoint.items() if k.startswith("backbone.")
        }
    if "storage_tokens" not in state or "cls_token" not in state:
        keys = sorted(checkpoint)[:8]
        raise CheckpointError(
            f"{path or 'checkpoint'} is not a DINOv3 backbone checkpoint in Meta's layout (no "
            f"'cls_token'/'storage_tokens'; first keys {keys}): for dinogeo files use "
            "dinogeo.models.load_backbone"
        )
    return {k: v for k, v in state.items() if isinstance(v, Tensor)}


def _describe(state: Mapping[str, Tensor]) -> tuple[int, int, bool]:
    width = int(state["cls_token"].shape[-1])
    depth = 1 + max((int(m.group(1)) for k in state if (m := _BLOCK.match(k))), default=-1)
    swiglu = any(k.endswith("mlp.w3.weight") for k in state)
    return width, depth, swiglu


def _guess_arch(width: int, depth: int) -> list[str]:
    return [
        name for name, cfg in ARCHS.items() if cfg["embed_dim"] == width and cfg["depth"] == depth
    ]


def load_official_dinov3(
    path: str | Path,
    arch: str,
    *,
    band_names: Sequence[BandSpec] | None = None,
    aliases: Mapping[str, str] | None = None,
    **backbone_kwargs: Any,
) -> Backbone:
    """Load an official DINOv3 backbone checkpoint (Meta's ``.pth``) from a local file.

    Args:
        path: the ``.pth`` file (flat backbone state dict, or a ``{"teacher": ...}``
            training checkpoint). Read with ``torch.load(weights_only=True)``.
        arch: the matching registered architecture, e.g. ``"vit_large_patch16_dinov3_qkvb"``
            for ViT-L SAT-493M or ``"vit_small_patch16_dinov3_qkvb"`` for ViT-S web.
        band_names: optional target bands; the RGB patch embedding is then expanded with
            :func:`dinogeo.models.expand_bands` (RGB bands keep their filters, new bands start
            from the mean filter, kernel scaled by 3/C).
        aliases: extra name -> colour role mappings for the expansion, e.g. ``{"B3": "red"}``.
        **backbone_kwargs: further :func:`create_backbone` arguments (``drop_path_rate``,
            ``rope_rescale_coords``, ``img_size``).

    Returns:
        The backbone in eval mode, with Meta's mask token loaded.

    Raises:
        CheckpointError: if the file is missing, unreadable, not in Meta's layout, or does not
            match ``arch`` (the message suggests the right one).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"official checkpoint {path} does not exist: check the path")
    raw = safe_torch_load(path)
    if not isinstance(raw, Mapping):
        raise CheckpointError(f"{path} does not hold a state dict: check the file")
    state = official_state_dict(raw, path)

    width, depth, swiglu = _describe(state)
    if arch not in ARCHS:
        guesses = _guess_arch(width, depth)
        raise CheckpointError(
            f"unknown architecture {arch!r} for {path}: the file has width {width} and depth "
            f"{depth}; use {guesses or sorted(ARCHS)}"
        )
    spec = ARCHS[arch]
    if (spec["embed_dim"], spec["depth"]) != (width, depth):
        guesses = _guess_arch(width, depth)
        raise CheckpointError(
            f"{path} holds a width-{width}, depth-{depth} ViT but {arch!r} is width "
            f"{spec['embed_dim']}, depth {spec['depth']}: use arch={guesses[0] if guesses else '?'}"
        )
    if swiglu != spec["ffn"].startswith("swiglu"):
        raise CheckpointError(
            f"{path} uses a {'SwiGLU' if swiglu else 'MLP'} feed-forward but {arch!r} does not: "
            "use the '_plus' model for SwiGLU checkpoints (S+, H+) and the plain one otherwise"
        )
    in_chans = int(state["patch_embed.proj.weight"].shape[1])
    backbone = empty_backbone(arch, in_chans, **backbone_kwargs)

    mask_token = state.get("mask_token")
    local_norm = {
        k[len("local_cls_norm.") :]: v for k, v in state.items() if k.startswith("local_cls_norm.")
    }
    if local_norm:
        backbone.add_local_cls_norm()
    converted = checkpoint_filter_fn(dict(state), backbone.vit)
    try:
        result = backbone.vit.load_state_dict(converted, strict=False)
    except RuntimeError as exc:
        raise CheckpointError(
            f"{path} does not fit {arch!r}: {str(exc).splitlines()[-1].strip()}"
        ) from exc
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{path} does not load cleanly into {arch!r}: missing {result.missing_keys[:6]}, "
            f"unexpected {result.unexpected_keys[:6]}; check that the file is a DINOv3 "
            "backbone of this size"
        )
    with torch.no_grad():
        if mask_token is not None:
            backbone.mask_token.copy_(mask_token.reshape(1, -1).to(backbone.mask_token.dtype))
        else:  # not in every export: start from zeros like a fresh model
            backbone.mask_token.zero_()
    if local_norm and backbone.local_cls_norm is not None:
        try:
            backbone.local_cls_norm.load_state_dict(local_norm, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(
                f"{path}: its 'local_cls_norm' does not fit {arch!r}: "
                f"{str(exc).splitlines()[-1].strip()}"
            ) from exc
    if band_names is not None:
        source = RGB_BANDS if in_chans == 3 else tuple(f"band{i + 1}" for i in range(in_chans))
        backbone = expand_bands(backbone, band_names, source_bands=source, aliases=aliases)
    return backbone.eval()
