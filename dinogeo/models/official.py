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
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from timm.models.eva import checkpoint_filter_fn
from torch import Tensor

from dinogeo.errors import CheckpointError
from dinogeo.models.backbone import Backbone
from dinogeo.models.bands import RGB_BANDS, BandSpec, adapt_patch_embed_weight
from dinogeo.models.materialise import assign_weights, meta_backbone
from dinogeo.models.registry import ARCHS

__all__ = [
    "load_official_dinov3",
    "official_backbone_state",
    "official_state_dict",
    "safe_torch_load",
]

_BLOCK = re.compile(r"^blocks\.(\d+)\.")


def safe_torch_load(path: Path, *, mmap: bool = True) -> Any:
    """``torch.load(path, weights_only=True, mmap=True)`` on CPU, errors as :class:`CheckpointError`.

    Paths (common in saved hyper-parameters) are allowed; nothing that can execute code is.
    With ``mmap`` (the default) tensors are memory-mapped from the file: only what is used is
    read, and a tensor that becomes a weight (:func:`~dinogeo.models.materialise.assign_weights`)
    costs no copy. Files in the legacy (pre-1.6, non-zip) format are read whole.

    Raises:
        CheckpointError: if the file is unreadable or holds disallowed Python objects.
    """
    allowed: list[Any] = [pathlib.PosixPath, pathlib.WindowsPath, pathlib.PurePosixPath]
    try:
        with torch.serialization.safe_globals(allowed):
            if mmap and zipfile.is_zipfile(path):
                return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
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
            training checkpoint). Read with ``torch.load(weights_only=True, mmap=True)``; the
            backbone is built on the meta device and the mapped tensors become its weights
            (:func:`official_backbone_state`): no random initialisation, no copy.
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
    in_chans = len(band_names) if band_names is not None else None
    state, file_chans = official_backbone_state(path, arch, band_names=band_names, aliases=aliases)
    backbone = meta_backbone(arch, in_chans or file_chans, **backbone_kwargs)
    if any(k.startswith("local_cls_norm.") for k in state):
        backbone.add_local_cls_norm()
    assign_weights(backbone, state, source=str(path))
    return backbone.eval()


def official_backbone_state(
    path: str | Path,
    arch: str,
    *,
    band_names: Sequence[BandSpec] | None = None,
    aliases: Mapping[str, str] | None = None,
) -> tuple[dict[str, Tensor], int]:
    """The state dict of a :class:`Backbone` from an official checkpoint, memory-mapped.

    The file is read with ``torch.load(mmap=True)`` and converted key by key (timm's
    ``checkpoint_filter_fn``, Meta's mask token and ``local_cls_norm`` kept): the large tensors
    stay views of the mapped file, so :func:`~dinogeo.models.materialise.assign_weights` makes
    them a backbone's weights without a copy. Values are those :func:`load_official_dinov3`
    loads (float32; the patch embedding expanded to ``band_names``).

    Args:
        path: the ``.pth`` file (flat backbone state dict or ``{"teacher": ...}``).
        arch: the matching registered architecture.
        band_names: optional target bands (see :func:`load_official_dinov3`).
        aliases: extra name -> colour role mappings for the expansion.

    Returns:
        ``(state, in_chans)``: keys ``vit.*``, ``mask_token`` and ``local_cls_norm.*`` (when the
        file has one), and the file's number of input channels.

    Raises:
        CheckpointError: as :func:`load_official_dinov3`.
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
    template = meta_backbone(arch, in_chans)  # shapes only, for timm's conversion
    converted = checkpoint_filter_fn(dict(state), template.vit)
    out: dict[str, Tensor] = {f"vit.{k}": v for k, v in converted.items()}
    mask_token = state.get("mask_token")
    width = int(spec["embed_dim"])
    if mask_token is not None:
        if mask_token.numel() != width:
            raise CheckpointError(
                f"{path}: its mask token has {mask_token.numel()} values, {arch!r} needs {width}"
            )
        out["mask_token"] = mask_token.reshape(1, width)
    else:  # not in every export: start from zeros like a fresh model
        out["mask_token"] = torch.zeros(1, width)
    for key, value in state.items():
        if key.startswith("local_cls_norm."):
            out[key] = value
    expected = set(template.vit.state_dict())
    missing = sorted(expected - {k[len("vit.") :] for k in out if k.startswith("vit.")})
    unexpected = sorted(k for k in out if k.startswith("vit.") and k[len("vit.") :] not in expected)
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not load cleanly into {arch!r}: missing {missing[:6]}, unexpected "
            f"{unexpected[:6]}; check that the file is a DINOv3 backbone of this size"
        )
    out = {k: v if v.dtype == torch.float32 else v.float() for k, v in out.items()}
    if band_names is not None:
        source = RGB_BANDS if in_chans == 3 else tuple(f"band{i + 1}" for i in range(in_chans))
        with torch.no_grad():
            out["vit.patch_embed.proj.weight"] = adapt_patch_embed_weight(
                out["vit.patch_embed.proj.weight"], source, band_names, aliases=aliases
            )
    return out, in_chans
