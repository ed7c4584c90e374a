"""Sensor specifications: band names, wavelengths, scaling to reflectance and normalisation stats.

A sensor is one YAML file per product in the top-level ``sensors/`` folder (shipped inside the
wheel). A user can pass their own YAML by path. Statistics are stored in *reflectance* units
(after ``DN * scale + offset``) so they transfer between products that share a band, whatever
their quantisation. Matching a raster's bands to a sensor is :mod:`dinogeo.data.band_match`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from dinogeo._paths import resource_dir
from dinogeo.errors import SensorError

__all__ = ["Band", "Sensor", "list_sensors", "load_sensor", "save_sensor", "shipped_sensors"]


@dataclass(frozen=True)
class Band:
    """One spectral band of a sensor.

    Attributes:
        name: canonical name, e.g. ``"B04"`` or ``"red"``.
        aliases: common names (STAC ``eo:common_name`` style): ``"red"``, ``"nir"``, ``"swir16"``...
        wavelength_nm: centre wavelength in nanometres, or None when not meaningful.
        gsd_m: ground sample distance in metres.
        mean: normalisation mean in reflectance units (after scale/offset).
        std: normalisation standard deviation in reflectance units.
    """

    name: str
    aliases: tuple[str, ...] = ()
    wavelength_nm: float | None = None
    gsd_m: float = float("nan")
    mean: float = 0.0
    std: float = 1.0

    def matches(self, key: str) -> bool:
        """Return whether ``key`` is this band's name or one of its aliases (case-insensitive)."""
        k = key.lower()
        return k == self.name.lower() or k in (a.lower() for a in self.aliases)


@dataclass(frozen=True)
class Sensor:
    """A sensor product: its bands, storage dtype, scaling to reflectance and nodata value.

    Attributes:
        name: product name, e.g. ``"sentinel2_l2a"``.
        description: one line for humans.
        dtype: storage dtype of the digital numbers (``"uint16"``...).
        scale: reflectance = DN * scale + offset.
        offset: see ``scale``.
        nodata: the DN marking missing pixels, or None.
        bands: the bands, in storage order.
        source: where the spec was loaded from (not part of equality).
    """

    name: str
    description: str
    dtype: str
    scale: float
    offset: float
    nodata: float | None
    bands: tuple[Band, ...]
    source: str = field(default="", compare=False)

    @property
    def band_names(self) -> tuple[str, ...]:
        """Canonical band names in order."""
        return tuple(b.name for b in self.bands)

    def index(self, key: str) -> int:
        """Return the position of the band named ``key`` (name or alias).

        Raises:
            SensorError: if no band has that name or alias.
        """
        for i, band in enumerate(self.bands):
            if band.matches(key):
                return i
        raise SensorError(
            f"sensor {self.name!r} has no band {key!r}; valid names: {self._valid_names()}"
        )

    def _valid_names(self) -> str:
        parts = []
        for b in self.bands:
            parts.append(f"{b.name} ({', '.join(b.aliases)})" if b.aliases else b.name)
        return ", ".join(parts)

    def with_scaling(self, scale: float | None = None, offset: float | None = None) -> Sensor:
        """Return this spec with the DN-to-reflectance scale and/or offset overridden.

        Args:
            scale: new scale (e.g. 1e-3 for surface reflectance exported x1000); None keeps it.
            offset: new offset; None keeps it.
        """
        changes: dict[str, Any] = {}
        if scale is not None:
            changes["scale"] = float(scale)
        if offset is not None:
            changes["offset"] = float(offset)
        return replace(self, **changes) if changes else self

    def select(self, names: Sequence[str]) -> Sensor:
        """Return a sensor with only the named bands, in the given order.

        Args:
            names: band names or aliases, e.g. ``["red", "green", "blue"]`` or ``["B04", "B08"]``.

        Raises:
            SensorError: if a name is unknown, repeated, or ``names`` is empty.
        """
        if isinstance(names, str):
            names = [names]
        if len(names) == 0:
            raise SensorError(f"select() on sensor {self.name!r} needs at least one band name")
        idx = [self.index(n) for n in names]
        if len(set(idx)) != len(idx):
            raise SensorError(
                f"band names {list(names)} select the same band of {self.name!r} twice"
            )
        return replace(self, bands=tuple(self.bands[i] for i in idx))

    @cached_property
    def _affine(self) -> tuple[np.ndarray, np.ndarray]:
        mean = np.array([b.mean for b in self.bands], dtype=np.float64)
        std = np.array([b.std for b in self.bands], dtype=np.float64)
        a = (self.scale / std).astype(np.float32)
        b = ((self.offset - mean) / std).astype(np.float32)
        return a[:, None, None], b[:, None, None]

    def normalize(self, raw: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Map digital numbers to normalised float32: ``(DN * scale + offset - mean) / std``.

        Args:
            raw: (C, H, W) or (N, C, H, W) digital numbers with C equal to the band count.
            out: optional float32 array of the same shape to write into (e.g. a slot of a batch).

        Returns:
            float32 array of the same shape (``out`` when given).

        Raises:
            SensorError: if the channel count differs from the band count.
        """
        c = raw.shape[-3] if raw.ndim >= 3 else -1
        if c != len(self.bands):
            raise SensorError(
                f"normalize() got an array of shape {raw.shape} but sensor {self.name!r} has "
                f"{len(self.bands)} bands; pass (C, H, W) in the sensor's band order"
            )
        a, b = self._affine
        if out is None:
            out = np.empty(raw.shape, dtype=np.float32)
        np.multiply(raw, a, out=out, casting="unsafe")  # one pass: DN -> float32 * scale/std
        out += b
        return out

    def to_dict(self) -> dict[str, Any]:
        """Return the YAML-ready mapping of this sensor."""
        return {
            "name": self.name,
            "description": self.description,
            "dtype": self.dtype,
            "scale": self.scale,
            "offset": self.offset,
            "nodata": self.nodata,
            "bands": [
                {
                    "name": b.name,
                    "aliases": list(b.aliases),
                    "wavelength_nm": b.wavelength_nm,
                    "gsd_m": b.gsd_m,
                    "mean": b.mean,
                    "std": b.std,
                }
                for b in self.bands
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<dict>") -> Sensor:
        """Build a sensor from a mapping (a parsed YAML file).

        Raises:
            SensorError: naming ``source`` if a key is missing or a value is invalid.
        """
        if not isinstance(data, Mapping):
            raise SensorError(
                f"{source}: a sensor YAML must be a mapping with name, dtype and bands"
            )
        missing = [k for k in ("name", "dtype", "bands") if k not in data]
        if missing:
            raise SensorError(f"{source}: sensor YAML lacks the keys {missing}; see sensors/*.yaml")
        raw_bands = data["bands"]
        if not isinstance(raw_bands, list) or not raw_bands:
            raise SensorError(f"{source}: 'bands' must be a non-empty list of band mappings")
        try:
            np.dtype(str(data["dtype"]))
        except TypeError as err:
            raise SensorError(f"{source}: unknown dtype {data['dtype']!r} ({err})") from err
        bands = []
        for i, rb in enumerate(raw_bands):
            if not isinstance(rb, Mapping) or "name" not in rb:
                raise SensorError(f"{source}: band {i} must be a mapping with at least a 'name'")
            try:
                std = float(rb.get("std", 1.0))
                band = Band(
                    name=str(rb["name"]),
                    aliases=tuple(str(a) for a in rb.get("aliases") or ()),
                    wavelength_nm=None
                    if rb.get("wavelength_nm") is None
                    else float(rb["wavelength_nm"]),
                    gsd_m=float(rb.get("gsd_m", float("nan"))),
                    mean=float(rb.get("mean", 0.0)),
                    std=std,
                )
            except (TypeError, ValueError) as err:
                raise SensorError(
                    f"{source}: band {rb.get('name')!r} has a bad value: {err}"
                ) from err
            if not (std > 0 and math.isfinite(std)):
                raise SensorError(f"{source}: band {band.name!r} needs std > 0, got {std}")
            bands.append(band)
        names = [b.name.lower() for b in bands]
        if len(set(names)) != len(names):
            raise SensorError(f"{source}: band names repeat: {[b.name for b in bands]}")
        nodata = data.get("nodata")
        try:
            return cls(
                name=str(data["name"]),
                description=str(data.get("description", "")),
                dtype=str(data["dtype"]),
                scale=float(data.get("scale", 1.0)),
                offset=float(data.get("offset", 0.0)),
                nodata=None if nodata is None else float(nodata),
                bands=tuple(bands),
                source=source,
            )
        except (TypeError, ValueError) as err:
            raise SensorError(f"{source}: bad scale, offset or nodata: {err}") from err


def list_sensors() -> list[str]:
    """Return the names of the shipped sensor specs, sorted."""
    return sorted(p.stem for p in resource_dir("sensors").glob("*.yaml"))


@functools.cache
def shipped_sensors() -> dict[str, Sensor]:
    """Every shipped sensor spec by name (loaded once per process; specs are immutable)."""
    return {n: load_sensor(n) for n in list_sensors()}


def load_sensor(name_or_path: str | Path | Sensor) -> Sensor:
    """Load a shipped sensor by name, or a user sensor YAML by path.

    Args:
        name_or_path: a shipped name such as ``"sentinel2_l2a"`` (see :func:`list_sensors`), a path
            to a YAML file, or a :class:`Sensor` (returned unchanged).

    Raises:
        SensorError: if the name is unknown (the message lists the valid names) or the YAML is invalid.
    """
    if isinstance(name_or_path, Sensor):
        return name_or_path
    text = str(name_or_path)
    path = Path(text)
    if path.suffix.lower() in {".yaml", ".yml"} or path.is_file():
        if not path.is_file():
            raise SensorError(f"sensor YAML {path} does not exist; pass an existing file or a name")
        return _load_yaml(path)
    shipped = resource_dir("sensors") / f"{text}.yaml"
    if not shipped.is_file():
        raise SensorError(
            f"unknown sensor {text!r}; shipped sensors: {', '.join(list_sensors())} "
            "(or pass the path of your own sensor YAML)"
        )
    return _load_yaml(shipped)


def _load_yaml(path: Path) -> Sensor:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise SensorError(f"cannot read sensor YAML {path}: {err}") from err
    return Sensor.from_dict(data, source=str(path))


def save_sensor(sensor: Sensor, path: str | Path, header: str = "") -> Path:
    """Write a sensor spec to YAML atomically (temporary file, then rename).

    Args:
        sensor: the spec to write.
        path: destination ``.yaml`` file.
        header: optional comment lines written at the top (without ``#``).

    Returns:
        The written path.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(f"# {line}\n" for line in header.splitlines())
    text += yaml.safe_dump(sensor.to_dict(), sort_keys=False, default_flow_style=None, width=100)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
    return out
