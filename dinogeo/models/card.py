"""Weight cards: the metadata that travels with every saved backbone.

A :class:`WeightCard` records what a backbone needs to be used correctly: architecture, patch
size, the band names and order it expects, the sensor, the normalisation (mean/std in
reflectance units after ``DN * scale + offset``), the training config and its hash, and where
the weights came from.

Files:

* ``.safetensors`` (what :func:`save_backbone` writes): tensors plus the card JSON in the
  header metadata under ``"dinogeo_card"``.
* ``.pt`` / ``.ckpt`` (dinogeo or Lightning checkpoints), read with ``torch.load(weights_only=True)``.
  They must hold the card (a dict or JSON string) under ``"dinogeo_card"``; the weights are the
  Backbone state dict at the top level, under ``"backbone"`` or under ``"state_dict"`` (Lightning)
  with a key prefix. The prefix is taken from ``"dinogeo_backbone_prefix"`` when present,
  otherwise found from the keys (a unique ``...vit.cls_token``, or the EMA ``teacher``).

Loading never executes code from the file. Official Meta DINOv3 files load with
:func:`load_official_dinov3` (defined in :mod:`dinogeo.models.official`, re-exported here as the
architecture contract places it beside :func:`load_backbone`).
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from dinogeo import __version__

if TYPE_CHECKING:
    from dinogeo.data.sensors import Sensor
from dinogeo.errors import BandMismatchError, CheckpointError, ConfigError
from dinogeo.models.backbone import Backbone, create_backbone
from dinogeo.models.materialise import assign_weights, meta_backbone
from dinogeo.models.official import load_official_dinov3, safe_torch_load

__all__ = [
    "CARD_KEY",
    "PREFIX_KEY",
    "WeightCard",
    "check_bands",
    "create_backbone_from_card",
    "hash_config",
    "load_backbone",
    "load_official_dinov3",
    "save_backbone",
]

CARD_KEY = "dinogeo_card"
PREFIX_KEY = "dinogeo_backbone_prefix"
_SAFE_SUFFIXES = (".safetensors",)
_TORCH_SUFFIXES = (".pt", ".pth", ".ckpt")


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
            backbone_kwargs=_backbone_kwargs(backbone),
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


def _backbone_kwargs(backbone: Backbone) -> dict[str, Any]:
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
    card = dataclasses.replace(card, backbone_kwargs=_backbone_kwargs(backbone))
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
