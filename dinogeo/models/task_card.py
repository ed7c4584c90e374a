"""Task cards: what a head predicts, in which units, with which classes and colours.

A task card is a small YAML file (``tasks/<name>.yaml``) shipped with the package or written by a
user. It is the single place that says how a model's outputs become a raster: the output dtype and
nodata, the valid range of a regression target, and, for classes, their raster values, names and
colours (later used for QGIS styles). Label vectors are mapped onto classes through the card, by
class name, alias or value.

Example::

    name: land_cover_aberystwyth
    kind: segmentation
    target: land cover class
    units: null
    dtype: uint8
    nodata: 0
    valid_range: null
    classes:
      - {value: 1, name: Forest, color: "#1b7837"}
    metrics: [iou, f1, miou, accuracy]
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dinogeo._paths import resource_dir
from dinogeo.errors import ConfigError, LabelError

__all__ = ["TaskCard", "TaskClass", "list_task_cards", "load_task_card"]

KINDS = ("segmentation", "regression", "change")
DTYPES = ("uint8", "uint16", "int16", "int32", "float32")
METRICS = {
    "segmentation": ("iou", "f1", "miou", "accuracy"),
    "change": ("iou", "f1", "miou", "accuracy"),
    "regression": ("mae", "rmse", "r2", "bias"),
}
_HEX = re.compile(r"^#[0-9a-fA-F]{6}$")
_KEYS = {
    "name",
    "kind",
    "target",
    "units",
    "dtype",
    "nodata",
    "valid_range",
    "classes",
    "metrics",
    "description",
}


def _norm(text: str) -> str:
    """Normalise a class name for matching: lower case, spaces/dashes as underscores."""
    return re.sub(r"[\s\-]+", "_", text.strip().lower())


@dataclass(frozen=True)
class TaskClass:
    """One output class.

    Attributes:
        value: the value written in output rasters (and found in label rasters).
        name: human-readable name (matched case-insensitively against vector labels).
        color: ``#rrggbb`` colour for maps and QGIS styles.
        aliases: other names accepted in vector labels for this class.
    """

    value: int
    name: str
    color: str
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class TaskCard:
    """What a head predicts and how its output raster looks.

    Attributes:
        name: card name (the file stem for shipped cards).
        kind: ``"segmentation"``, ``"regression"`` or ``"change"``.
        target: what is predicted, in words.
        units: physical units of a regression target (``"m"``), else None.
        dtype: output raster dtype.
        nodata: output raster nodata value.
        valid_range: ``(min, max)`` of a regression target, else None.
        classes: output classes, in model output channel order (segmentation and change).
        metrics: metric names reported by training and ``dinogeo validate``.
        description: free text.
    """

    name: str
    kind: str
    target: str
    units: str | None
    dtype: str
    nodata: float | int | None
    valid_range: tuple[float, float] | None
    classes: tuple[TaskClass, ...] = ()
    metrics: tuple[str, ...] = ()
    description: str = ""
    source: str = field(default="", compare=False)

    @property
    def is_classification(self) -> bool:
        """True for segmentation and change cards (outputs are class probabilities)."""
        return self.kind in ("segmentation", "change")

    @property
    def num_outputs(self) -> int:
        """Number of model output channels: one per class, or 1 for regression."""
        return len(self.classes) if self.is_classification else 1

    @property
    def class_values(self) -> list[int]:
        """Raster values of the classes in output channel order."""
        return [c.value for c in self.classes]

    @property
    def class_names(self) -> list[str]:
        """Names of the classes in output channel order."""
        return [c.name for c in self.classes]

    @property
    def class_colors(self) -> list[str]:
        """``#rrggbb`` colours of the classes in output channel order."""
        return [c.color for c in self.classes]

    def class_index(self, label: object, *, source: str | Path | None = None) -> int:
        """Map a class name, alias or raster value to the output channel index.

        Args:
            label: a class name or alias (case-insensitive), or a class value (int, or a numeric
                string such as ``"3"`` as found in Shapefile attributes).
            source: file the label came from, used in the error message.

        Returns:
            The index of the class in ``classes``.

        Raises:
            LabelError: if the label matches no class of the card.
        """
        for i, c in enumerate(self.classes):
            if isinstance(label, str):
                key = _norm(label)
                if key == _norm(c.name) or key in (_norm(a) for a in c.aliases):
                    return i
        number = _as_int(label)
        if number is not None:
            for i, c in enumerate(self.classes):
                if c.value == number:
                    return i
        where = f" in {source}" if source else ""
        known = ", ".join(f"{c.value}={c.name}" for c in self.classes)
        raise LabelError(
            f"unknown class {label!r}{where} for task card {self.name!r}: known classes are "
            f"{known}. Fix: relabel the features, or use/write a task card whose 'classes' "
            "(name, value or aliases) include it."
        )

    def value_lut(self) -> dict[int, int]:
        """Return ``{raster value: channel index}`` for the classes."""
        return {c.value: i for i, c in enumerate(self.classes)}

    def to_dict(self) -> dict[str, Any]:
        """Return the card as plain YAML/JSON-ready data."""
        out: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "target": self.target,
            "units": self.units,
            "dtype": self.dtype,
            "nodata": self.nodata,
            "valid_range": list(self.valid_range) if self.valid_range else None,
            "classes": [
                {"value": c.value, "name": c.name, "color": c.color}
                | ({"aliases": list(c.aliases)} if c.aliases else {})
                for c in self.classes
            ],
            "metrics": list(self.metrics),
        }
        if self.description:
            out["description"] = self.description
        return out

    def to_json(self) -> str:
        """Return the card as a JSON string (stored in model bundles)."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "") -> TaskCard:
        """Build and validate a card from parsed YAML/JSON.

        Args:
            data: the mapping read from the file.
            source: where it came from, used in error messages.

        Returns:
            The validated card.

        Raises:
            ConfigError: if a key is unknown, missing or invalid.
        """
        where = source or "<task card>"
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: a task card must be a YAML mapping of keys to values")
        unknown = set(data) - _KEYS
        if unknown:
            raise ConfigError(
                f"{where}: unknown key(s) {sorted(unknown)}; allowed keys are {sorted(_KEYS)}"
            )
        for key in ("name", "kind", "target", "dtype"):
            if key not in data:
                raise ConfigError(f"{where}: missing required key {key!r}")
        kind = str(data["kind"])
        if kind not in KINDS:
            raise ConfigError(f"{where}: kind {kind!r} is not one of {list(KINDS)}")
        dtype = str(data["dtype"])
        if dtype not in DTYPES:
            raise ConfigError(f"{where}: dtype {dtype!r} is not one of {list(DTYPES)}")
        classes = tuple(_parse_class(c, where) for c in data.get("classes") or [])
        if kind != "regression" and len(classes) < 2:
            raise ConfigError(f"{where}: a {kind} card needs at least two classes")
        if kind == "regression" and classes:
            raise ConfigError(f"{where}: a regression card has no 'classes'; remove them")
        values = [c.value for c in classes]
        if len(set(values)) != len(values):
            raise ConfigError(f"{where}: class values must be unique, got {values}")
        names = [_norm(c.name) for c in classes]
        if len(set(names)) != len(names):
            raise ConfigError(f"{where}: class names must be unique, got {names}")
        nodata = data.get("nodata")
        if nodata is not None and not isinstance(nodata, int | float):
            raise ConfigError(f"{where}: nodata must be a number or null, got {nodata!r}")
        if nodata is not None and classes and nodata in values:
            raise ConfigError(f"{where}: nodata {nodata} is also a class value; pick another")
        vr = data.get("valid_range")
        valid_range: tuple[float, float] | None = None
        if vr is not None:
            if not (isinstance(vr, list | tuple) and len(vr) == 2):
                raise ConfigError(f"{where}: valid_range must be [min, max], got {vr!r}")
            lo, hi = float(vr[0]), float(vr[1])
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise ConfigError(f"{where}: valid_range must satisfy min < max, got {vr!r}")
            valid_range = (lo, hi)
        metrics = tuple(str(m) for m in data.get("metrics") or METRICS[kind])
        bad = [m for m in metrics if m not in METRICS[kind]]
        if bad:
            raise ConfigError(
                f"{where}: metric(s) {bad} not available for kind {kind!r}; use {METRICS[kind]}"
            )
        return cls(
            name=str(data["name"]),
            kind=kind,
            target=str(data["target"]),
            units=None if data.get("units") is None else str(data["units"]),
            dtype=dtype,
            nodata=nodata,
            valid_range=valid_range,
            classes=classes,
            metrics=metrics,
            description=str(data.get("description") or ""),
            source=source,
        )

    @classmethod
    def from_json(cls, text: str, *, source: str = "") -> TaskCard:
        """Parse a card from the JSON written by :meth:`to_json`."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{source or '<task card>'}: invalid task card JSON: {err}") from err
        return cls.from_dict(data, source=source)


def _as_int(label: object) -> int | None:
    if isinstance(label, bool):
        return None
    if isinstance(label, int):
        return label
    if isinstance(label, float) and label.is_integer():
        return int(label)
    if isinstance(label, str) and re.fullmatch(r"\s*-?\d+(\.0+)?\s*", label):
        return int(float(label))
    try:  # numpy scalars
        as_float = float(label)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return int(as_float) if as_float.is_integer() else None


def _parse_class(entry: object, where: str) -> TaskClass:
    if not isinstance(entry, Mapping) or not {"value", "name", "color"} <= set(entry):
        raise ConfigError(f"{where}: each class needs 'value', 'name' and 'color', got {entry!r}")
    value = entry["value"]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}: class value must be an integer, got {value!r}")
    color = str(entry["color"])
    if not _HEX.match(color):
        raise ConfigError(f"{where}: class colour must be '#rrggbb', got {color!r}")
    aliases = entry.get("aliases") or []
    if not isinstance(aliases, Iterable) or isinstance(aliases, str):
        raise ConfigError(f"{where}: class aliases must be a list of names, got {aliases!r}")
    return TaskClass(value, str(entry["name"]), color, tuple(str(a) for a in aliases))


def list_task_cards() -> list[str]:
    """Return the names of the task cards shipped with dinogeo."""
    return sorted(p.stem for p in resource_dir("tasks").glob("*.yaml"))


def load_task_card(name_or_path: str | Path) -> TaskCard:
    """Load a shipped task card by name (``"land_cover"``) or any task card YAML by path.

    Args:
        name_or_path: a shipped card name (see :func:`list_task_cards`) or a path to a YAML file.

    Returns:
        The validated :class:`TaskCard`.

    Raises:
        ConfigError: if the name is unknown or the file is not a valid task card.
    """
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        path = resource_dir("tasks") / f"{name_or_path}.yaml"
        if not path.is_file():
            raise ConfigError(
                f"unknown task card {str(name_or_path)!r}: shipped cards are "
                f"{list_task_cards()}; or pass the path of a task card YAML"
            )
    if not path.is_file():
        raise ConfigError(f"task card {path} does not exist: check the path")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err}); fix the syntax") from err
    return TaskCard.from_dict(data, source=str(path))
