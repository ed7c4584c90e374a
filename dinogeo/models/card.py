"""Weight cards: the metadata that travels with every saved backbone.

A :class:`WeightCard` records what a backbone needs to be used correctly: architecture, patch
size, the band names and order it expects, the sensor, the normalisation (mean/std in
reflectance units after ``DN * scale + offset``), the training config and its hash, and where
the weights came from. :func:`create_backbone_from_card` builds the architecture a card
describes; :func:`check_bands` compares imagery bands with a card's. Saving and loading a backbone
with its card is :mod:`dinogeo.models.backbone_file`.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from dinogeo import __version__

if TYPE_CHECKING:
    from dinogeo.data.sensors import Sensor
from dinogeo.errors import BandMismatchError, CheckpointError, ConfigError
from dinogeo.models.backbone import Backbone, create_backbone
from dinogeo.models.materialise import meta_backbone

__all__ = [
    "WeightCard",
    "architecture_kwargs",
    "check_bands",
    "create_backbone_from_card",
    "hash_config",
]


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def hash_config(config: Mapping[str, Any]) -> str:
    """Return the sha256 hex digest of the canonical JSON of a config dict.

    Canonical JSON: sorted keys, no whitespace, non-JSON values (paths...) as strings.

    Raises:
        ConfigError: if the config has non-string keys that cannot be sorted.
    """
    try:
        text = _canonical_json(dict(config))
    except TypeError as exc:
        raise ConfigError(
            f"training config cannot be hashed ({exc}): use string keys throughout"
        ) from exc
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


@dataclasses.dataclass
class WeightCard:
    """Metadata of a saved backbone.

    Attributes:
        arch: registered architecture name (see ``dinogeo.models.registry``).
        patch_size: patch size in pixels.
        embed_dim: token width.
        band_names: input bands in the order the backbone expects.
        sensor: sensor name (e.g. ``"sentinel2_l2a"``) or ``"rgb"`` for official RGB weights.
        mean: per-band mean in reflectance units (after scale/offset).
        std: per-band standard deviation in reflectance units.
        scale: reflectance = DN * scale + offset.
        offset: see ``scale``.
        training_config: the config the weights were trained with (JSON-compatible).
        config_hash: sha256 of the canonical JSON of ``training_config``; computed when empty,
            checked when given.
        source: where the weights came from (``"scratch"``, an official checkpoint path...).
        backbone_kwargs: keyword arguments of ``create_backbone`` besides ``arch`` that rebuild
            the architecture (filled by :func:`save_backbone`).
        created: ISO-8601 UTC creation time.
        dinogeo_version: dinogeo version that wrote the card.
    """

    arch: str
    patch_size: int
    embed_dim: int
    band_names: list[str]
    sensor: str
    mean: list[float]
    std: list[float]
    scale: float = 1.0
    offset: float = 0.0
    training_config: dict[str, Any] = dataclasses.field(default_factory=dict)
    config_hash: str = ""
    source: str = "scratch"
    backbone_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    created: str = dataclasses.field(default_factory=_now)
    dinogeo_version: str = __version__

    def __post_init__(self) -> None:
        self.band_names = [str(b) for b in self.band_names]
        self.mean = [float(v) for v in self.mean]
        self.std = [float(v) for v in self.std]
        n = len(self.band_names)
        if n == 0:
            raise ConfigError("weight card: band_names is empty; list the backbone's input bands")
        if len(self.mean) != n or len(self.std) != n:
            raise ConfigError(
                f"weight card: {n} band names {self.band_names} but {len(self.mean)} means and "
                f"{len(self.std)} stds; give one mean and one std per band"
            )
        if any(s <= 0 for s in self.std):
            raise ConfigError(f"weight card: std values must be positive, got {self.std}")
        if len({b.lower() for b in self.band_names}) != n:
            raise ConfigError(f"weight card: duplicate band names in {self.band_names}")
        expected = hash_config(self.training_config)
        if not self.config_hash:
            self.config_hash = expected
        elif self.config_hash != expected:
            raise CheckpointError(
                f"weight card: config_hash {self.config_hash[:12]}... does not match the "
                f"training_config (hash {expected[:12]}...): the card was edited or corrupted; "
                "restore the original file or leave config_hash empty to recompute it"
            )

    @property
    def in_chans(self) -> int:
        """Number of input bands."""
        return len(self.band_names)

    @classmethod
    def from_backbone(
        cls,
        backbone: Backbone,
        *,
        band_names: Sequence[str],
        sensor: str,
        mean: Sequence[float],
        std: Sequence[float],
        scale: float = 1.0,
        offset: float = 0.0,
        training_config: Mapping[str, Any] | None = None,
        source: str = "scratch",
    ) -> WeightCard:
        """Make a card whose architecture fields come from a backbone.

        Raises:
            BandMismatchError: if the number of bands differs from the backbone's ``in_chans``.
        """
        if len(band_names) != backbone.in_chans:
            raise BandMismatchError(
                f"{len(band_names)} band names {list(band_names)} for a backbone with "
                f"{backbone.in_chans} input bands: give one name per input band"
            )
        return cls(
            arch=backbone.arch,
            patch_size=backbone.patch_size,
            embed_dim=backbone.embed_dim,
            band_names=list(band_names),
            sensor=sensor,
            mean=list(mean),
            std=list(std),
            scale=scale,
            offset=offset,
            training_config=dict(training_config or {}),
            source=source,
            backbone_kwargs=architecture_kwargs(backbone),
        )

    @classmethod
    def for_sensor(
        cls,
        backbone: Backbone,
        sensor: Sensor,
        *,
        training_config: Mapping[str, Any] | None = None,
        source: str = "scratch",
    ) -> WeightCard:
        """Make a card whose bands, normalisation and scale/offset come from a sensor spec.

        Raises:
            BandMismatchError: if the sensor's band count differs from the backbone's.
        """
        return cls.from_backbone(
            backbone,
            band_names=list(sensor.band_names),
            sensor=sensor.name,
            mean=[b.mean for b in sensor.bands],
            std=[b.std for b in sensor.bands],
            scale=float(sensor.scale),
            offset=float(sensor.offset),
            training_config=training_config,
            source=source,
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the card as a JSON-compatible dict."""
        data: dict[str, Any] = json.loads(self.to_json())
        return data

    def to_json(self) -> str:
        """Return the card as JSON (sorted keys)."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True, default=str)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source_file: str = "") -> WeightCard:
        """Build a card from a dict (unknown keys are ignored with a warning).

        Raises:
            CheckpointError: if required fields are missing or invalid.
        """
        where = f" in {source_file}" if source_file else ""
        names = {f.name for f in dataclasses.fields(cls)}
        required = {
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
        missing = sorted(required - set(data))
        if missing:
            raise CheckpointError(
                f"weight card{where} lacks {missing}: the file was not written by "
                "dinogeo.models.save_backbone; re-save the backbone with a complete card"
            )
        unknown = sorted(set(data) - names)
        if unknown:
            warnings.warn(
                f"weight card{where} has unknown fields {unknown} (newer dinogeo?); ignored",
                stacklevel=2,
            )
        try:
            return cls(**{k: v for k, v in data.items() if k in names})
        except (TypeError, ValueError) as exc:
            if isinstance(exc, CheckpointError):
                raise CheckpointError(f"{exc}{where}") from exc
            raise CheckpointError(f"invalid weight card{where}: {exc}") from exc

    @classmethod
    def from_json(cls, text: str, *, source_file: str = "") -> WeightCard:
        """Build a card from its JSON text.

        Raises:
            CheckpointError: if the text is not valid card JSON.
        """
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CheckpointError(
                f"weight card in {source_file or 'text'} is not JSON: {exc}"
            ) from exc
        if not isinstance(data, dict):
            raise CheckpointError(f"weight card in {source_file or 'text'} is not a JSON object")
        return cls.from_dict(data, source_file=source_file)


def architecture_kwargs(backbone: Backbone) -> dict[str, Any]:
    """The ``create_backbone`` keyword arguments (besides ``in_chans``) that rebuild a backbone.

    Raises:
        CheckpointError: they are not JSON-compatible, so a card cannot store them.
    """
    kwargs = {k: v for k, v in backbone.config.items() if k != "in_chans"}
    try:
        json.dumps(kwargs)
    except TypeError as exc:
        raise CheckpointError(
            f"backbone config {kwargs} cannot be stored in a weight card ({exc}): build the "
            "backbone with JSON-compatible create_backbone overrides only"
        ) from exc
    return kwargs


def create_backbone_from_card(card: WeightCard, *, initialise: bool = True) -> Backbone:
    """Build a backbone with the architecture a card describes.

    Args:
        card: the weight card.
        initialise: randomly initialise the weights; False builds it on the ``meta`` device,
            to be filled by :func:`~dinogeo.models.materialise.assign_weights`.
    """
    kwargs = dict(card.backbone_kwargs)
    kwargs.pop("in_chans", None)
    build = create_backbone if initialise else meta_backbone
    backbone = build(card.arch, card.in_chans, **kwargs)
    if backbone.embed_dim != card.embed_dim or backbone.patch_size != card.patch_size:
        raise CheckpointError(
            f"weight card says {card.arch!r} has width {card.embed_dim} and patch "
            f"{card.patch_size}, but it builds width {backbone.embed_dim} and patch "
            f"{backbone.patch_size}: the card's backbone_kwargs are incomplete"
        )
    return backbone


def check_bands(card: WeightCard, band_names: Sequence[str], source: str = "the input") -> None:
    """Check that imagery bands match the card's bands (names and order, case-insensitive).

    Args:
        card: the backbone's weight card.
        band_names: the band names of the imagery, in file order.
        source: what the bands come from (a file path), used in the message.

    Raises:
        BandMismatchError: naming both band lists and how to fix the mismatch.
    """
    expected = [b.lower() for b in card.band_names]
    got = [str(b).lower() for b in band_names]
    if got == expected:
        return
    if sorted(got) == sorted(expected):
        fix = f"reorder the bands to {card.band_names} (e.g. bands={card.band_names})"
    elif set(expected) <= set(got):
        fix = f"select the backbone's bands from the file with bands={card.band_names}"
    else:
        missing = [b for b, low in zip(card.band_names, expected, strict=True) if low not in got]
        fix = (
            f"the imagery lacks {missing}: use imagery with these bands, or adapt the backbone "
            "with dinogeo.models.select_bands / expand_bands and retrain the head"
        )
    raise BandMismatchError(
        f"{source} has bands {list(band_names)} but the backbone ({card.arch}, sensor "
        f"{card.sensor!r}) expects {card.band_names}: {fix}"
    )
