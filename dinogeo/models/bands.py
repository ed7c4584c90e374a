"""Adapt a backbone's patch embedding to other bands: expand RGB to N bands, or select/reorder.

The rule (DINOv3 FINO branch, ``utils/expand_patch_embed.py``, spec section 6): each new band
that matches a source band by name, or by colour role (red/green/blue through common aliases
such as Sentinel-2's B04/B03/B02), takes that band's filter; every other new band starts from
the mean of the source filters; the whole kernel is then scaled by ``C_source / C_new`` (3/C
for RGB). For grey input (all bands equal) the expanded embedding then equals the original
one whenever every source band is matched.

Selection is the same operation with every new band required to match: a reorder changes
nothing but the column order, and a subset is rescaled by ``C_source / C_new`` by default, so
that selecting RGB from an expanded model gives back the RGB filters exactly.

Band names are matched case-insensitively. Elements may be strings or band objects with
``name`` and ``aliases`` attributes (such as ``dinogeo.data.sensors.Band``), whose aliases are
then used too. Names whose colour role is ambiguous across sensors (Landsat's ``B2`` is blue on
Landsat 8 but green on Landsat 7) are not guessed: pass ``aliases={"B3": "red", ...}``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from dinogeo.errors import BandMismatchError, ConfigError
from dinogeo.models.backbone import Backbone

__all__ = [
    "RGB_BANDS",
    "adapt_patch_embed_weight",
    "band_role",
    "expand_bands",
    "select_bands",
]

RGB_BANDS: tuple[str, str, str] = ("red", "green", "blue")

# unambiguous aliases of the three colour roles (lower case)
_ROLE_ALIASES: dict[str, tuple[str, ...]] = {
    "red": ("red", "r", "b04", "sentinel2_b04", "rgb_r"),
    "green": ("green", "g", "b03", "sentinel2_b03", "rgb_g"),
    "blue": ("blue", "b", "b02", "sentinel2_b02", "rgb_b"),
}
_ALIAS_TO_ROLE = {alias: role for role, names in _ROLE_ALIASES.items() for alias in names}


@runtime_checkable
class BandLike(Protocol):
    """Anything with a band ``name`` and a tuple of ``aliases`` (e.g. a sensor ``Band``)."""

    @property
    def name(self) -> str:
        """The band's name."""
        ...

    @property
    def aliases(self) -> tuple[str, ...]:
        """Other names of the band (``red``, ``nir``...)."""
        ...


BandSpec = str | BandLike


def _names(band: BandSpec) -> list[str]:
    if isinstance(band, str):
        return [band.lower()]
    return [band.name.lower(), *(a.lower() for a in band.aliases)]


def _label(band: BandSpec) -> str:
    return band if isinstance(band, str) else band.name


def band_role(band: BandSpec, aliases: Mapping[str, str] | None = None) -> str | None:
    """Return the colour role ("red", "green" or "blue") of a band, or None.

    Args:
        band: a band name or a band object with ``name`` and ``aliases``.
        aliases: extra name -> role mappings, e.g. ``{"B3": "red"}`` for Landsat 7.

    Raises:
        ConfigError: if ``aliases`` maps to something other than red/green/blue.
    """
    extra = {k.lower(): v.lower() for k, v in (aliases or {}).items()}
    bad = sorted(v for v in extra.values() if v not in _ROLE_ALIASES)
    if bad:
        raise ConfigError(f"band aliases must map to 'red', 'green' or 'blue', got {bad}")
    for name in _names(band):
        if name in extra:
            return extra[name]
    for name in _names(band):
        if name in _ALIAS_TO_ROLE:
            return _ALIAS_TO_ROLE[name]
    return None


def _match(
    source_bands: Sequence[BandSpec],
    target_bands: Sequence[BandSpec],
    aliases: Mapping[str, str] | None,
) -> list[int | None]:
    """For each target band, the index of the source band it matches, or None."""
    for label, bands in (("source", source_bands), ("new", target_bands)):
        lowered = [_label(b).lower() for b in bands]
        if len(set(lowered)) != len(lowered):
            raise ConfigError(f"duplicate {label} band names in {[_label(b) for b in bands]}")
    source_names = [set(_names(b)) for b in source_bands]
    source_roles = [band_role(b, aliases) for b in source_bands]
    matches: list[int | None] = []
    for band in target_bands:
        names = set(_names(band))
        found = next((i for i, s in enumerate(source_names) if names & s), None)
        if found is None:
            role = band_role(band, aliases)
            if role is not None and role in source_roles:
                found = source_roles.index(role)
        matches.append(found)
    return matches


def adapt_patch_embed_weight(
    weight: Tensor,
    source_bands: Sequence[BandSpec],
    target_bands: Sequence[BandSpec],
    *,
    aliases: Mapping[str, str] | None = None,
    allow_new: bool = True,
    rescale: bool = True,
) -> Tensor:
    """Map a patch-embedding kernel from one band list to another.

    Args:
        weight: conv kernel (D, C_source, p, p).
        source_bands: the bands of ``weight``'s input channels, in order.
        target_bands: the wanted bands, in order.
        aliases: extra name -> colour role mappings (see :func:`band_role`).
        allow_new: let unmatched bands start from the mean source filter; if False every
            target band must match a source band.
        rescale: scale the kernel by ``C_source / C_target``.

    Returns:
        The kernel (D, C_target, p, p).

    Raises:
        BandMismatchError: if a band cannot be matched and ``allow_new`` is False, or the
            source band count differs from the kernel.
        ConfigError: for duplicate band names or an empty target list.
    """
    if weight.ndim != 4:
        raise ConfigError(f"expected a (D, C, p, p) kernel, got shape {tuple(weight.shape)}")
    if weight.shape[1] != len(source_bands):
        raise BandMismatchError(
            f"the patch embedding has {weight.shape[1]} input bands but {len(source_bands)} "
            f"source band names were given ({[_label(b) for b in source_bands]}): "
            "name every input band of the backbone"
        )
    if not target_bands:
        raise ConfigError("no target bands given: list the bands the backbone should take")
    matches = _match(source_bands, target_bands, aliases)
    unmatched = [_label(b) for b, m in zip(target_bands, matches, strict=True) if m is None]
    if unmatched and not allow_new:
        raise BandMismatchError(
            f"bands {unmatched} are not among the backbone's bands "
            f"{[_label(b) for b in source_bands]}: choose bands the backbone has, or use "
            "expand_bands to add new ones"
        )
    mean_filter = weight.mean(dim=1)
    columns = [weight[:, m] if m is not None else mean_filter for m in matches]
    new = torch.stack(columns, dim=1)
    if rescale:
        new = new * (len(source_bands) / len(target_bands))
    return new.contiguous()


def _replace_patch_embed(backbone: Backbone, weight: Tensor) -> Backbone:
    adapted = copy.deepcopy(backbone)
    old = adapted.vit.patch_embed.proj
    conv = nn.Conv2d(
        weight.shape[1],
        old.out_channels,
        kernel_size=(old.kernel_size[0], old.kernel_size[-1]),
        stride=(old.stride[0], old.stride[-1]),
        padding=old.padding if isinstance(old.padding, str) else (old.padding[0], old.padding[-1]),
        bias=old.bias is not None,
    ).to(device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        conv.weight.copy_(weight)
        if old.bias is not None and conv.bias is not None:
            conv.bias.copy_(old.bias)
    conv.weight.requires_grad_(old.weight.requires_grad)
    if conv.bias is not None and old.bias is not None:
        conv.bias.requires_grad_(old.bias.requires_grad)
    adapted.vit.patch_embed.proj = conv
    adapted.vit.in_chans = weight.shape[1]
    adapted.in_chans = weight.shape[1]
    adapted.config["in_chans"] = weight.shape[1]
    return adapted


def expand_bands(
    backbone: Backbone,
    band_names: Sequence[BandSpec],
    *,
    source_bands: Sequence[BandSpec] = RGB_BANDS,
    aliases: Mapping[str, str] | None = None,
) -> Backbone:
    """Return a copy of a backbone whose patch embedding takes ``band_names``.

    Bands matching a source band (by name or colour role) take its filter, the others the
    mean source filter; the kernel is scaled by ``len(source_bands) / len(band_names)``.

    Args:
        backbone: e.g. an RGB backbone from official weights.
        band_names: the new bands in order (strings or band objects with aliases).
        source_bands: the backbone's current bands (default red, green, blue).
        aliases: extra name -> colour role mappings, e.g. ``{"B3": "red"}``.

    Returns:
        A new backbone (the input is not modified).
    """
    with torch.no_grad():
        weight = adapt_patch_embed_weight(
            backbone.vit.patch_embed.proj.weight, source_bands, band_names, aliases=aliases
        )
    return _replace_patch_embed(backbone, weight)


def select_bands(
    backbone: Backbone,
    source_bands: Sequence[BandSpec],
    band_names: Sequence[BandSpec],
    *,
    aliases: Mapping[str, str] | None = None,
    rescale: bool = True,
) -> Backbone:
    """Return a copy of a backbone restricted to (or reordered to) a subset of its bands.

    Args:
        backbone: the backbone.
        source_bands: its current bands, in order (e.g. the weight card's ``band_names``).
        band_names: the wanted bands, each one of ``source_bands``.
        aliases: extra name -> colour role mappings.
        rescale: scale the kernel by ``len(source_bands) / len(band_names)`` (undoes the
            scaling of :func:`expand_bands`).

    Raises:
        BandMismatchError: if a wanted band is not among the backbone's bands.
    """
    with torch.no_grad():
        weight = adapt_patch_embed_weight(
            backbone.vit.patch_embed.proj.weight,
            source_bands,
            band_names,
            aliases=aliases,
            allow_new=False,
            rescale=rescale,
        )
    return _replace_patch_embed(backbone, weight)
