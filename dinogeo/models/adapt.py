"""Carry a backbone over to another sensor: its patch embedding and weight card follow the bands.

A backbone pretrained on Sentinel-2 can serve Landsat or an RGB camera: every band of the new
sensor that matches one of the backbone's bands (by name, alias such as ``nir``/``swir1``, or
colour role) keeps that band's filter, bands with no match start from the mean filter, and the
kernel is rescaled by ``C_old / C_new`` (see :mod:`dinogeo.models.bands`). The new weight card
takes the new sensor's band names, normalisation and scale/offset, and records where the
weights came from and how each band was mapped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from dinogeo.data.sensors import Band, Sensor, load_sensor
from dinogeo.errors import BandMismatchError, SensorError
from dinogeo.models.backbone import Backbone
from dinogeo.models.backbone_file import load_backbone, save_backbone
from dinogeo.models.bands import BandSpec, _match, _replace_patch_embed, adapt_patch_embed_weight
from dinogeo.models.card import WeightCard

__all__ = ["adapt_backbone", "adapt_backbone_file"]


def _card_bands(card: WeightCard) -> list[BandSpec]:
    """The card's bands with their aliases when the card's sensor is a known spec."""
    try:
        sensor = load_sensor(card.sensor).select(card.band_names)
    except SensorError:
        return list(card.band_names)
    return list(sensor.bands)


def adapt_backbone(
    backbone: Backbone,
    card: WeightCard,
    sensor: str | Path | Sensor,
    *,
    bands: Sequence[str] | None = None,
    aliases: Mapping[str, str] | None = None,
) -> tuple[Backbone, WeightCard]:
    """Return a copy of ``backbone`` (and a new card) that takes ``sensor``'s bands.

    Args:
        backbone: the backbone (e.g. from :func:`~dinogeo.models.load_backbone`).
        card: its weight card.
        sensor: the target sensor: a shipped name, a sensor YAML path or a ``Sensor``.
        bands: the target bands to use, in order (all of the sensor's when None).
        aliases: extra name -> colour role mappings (e.g. ``{"B3": "red"}``).

    Returns:
        ``(new backbone, new weight card)``; the inputs are not modified.

    Raises:
        BandMismatchError: no band of the target sensor matches any band of the backbone
            (nothing would be carried over).
        SensorError: unknown sensor or band.
    """
    spec = load_sensor(sensor)
    if bands is not None:
        spec = spec.select(list(bands))
    source: list[BandSpec] = _card_bands(card)
    target: list[Band] = list(spec.bands)
    matches = _match(source, target, aliases)
    if all(m is None for m in matches):
        raise BandMismatchError(
            f"none of {spec.name}'s bands {spec.band_names} matches the backbone's bands "
            f"{card.band_names} (sensor {card.sensor!r}) by name, alias or colour role: pass "
            "aliases={'NAME': 'red', ...} or use a backbone trained on related bands"
        )
    with torch.no_grad():
        weight = adapt_patch_embed_weight(
            backbone.vit.patch_embed.proj.weight, source, target, aliases=aliases
        )
    adapted = _replace_patch_embed(backbone, weight)
    band_map = {
        band.name: (card.band_names[m] if m is not None else "mean filter")
        for band, m in zip(target, matches, strict=True)
    }
    training_config = {
        **card.training_config,
        "adapted_from": {
            "sensor": card.sensor,
            "bands": list(card.band_names),
            "config_hash": card.config_hash,
            "band_map": band_map,
        },
    }
    new_card = WeightCard.for_sensor(
        adapted,
        spec,
        training_config=training_config,
        source=f"{card.source}; adapted from {card.sensor} to {spec.name}",
    )
    return adapted, new_card


def adapt_backbone_file(
    path: str | Path,
    sensor: str | Path | Sensor,
    out: str | Path,
    *,
    bands: Sequence[str] | None = None,
    aliases: Mapping[str, str] | None = None,
) -> WeightCard:
    """Adapt the backbone file ``path`` to ``sensor`` and save it with its card to ``out``.

    Args:
        path: a dinogeo backbone file (``.safetensors`` with a weight card).
        sensor: the target sensor (shipped name, YAML path or ``Sensor``).
        out: the output backbone file (written atomically).
        bands: the target bands to use, in order (all of the sensor's when None).
        aliases: extra name -> colour role mappings.

    Returns:
        The new weight card.
    """
    backbone, card = load_backbone(path)
    adapted, new_card = adapt_backbone(backbone, card, sensor, bands=bands, aliases=aliases)
    save_backbone(out, adapted, new_card)
    return new_card
