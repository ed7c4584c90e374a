"""How a run reads its labels: one record shared by the labelled-chip data and validation.

:class:`LabelSpec` groups the options that always travel together when labels are read: the
class attribute of vector labels, the layer of a multi-layer file, the CRS of coordinates
stored without one, the disk radius of point labels, and the names the caller's configuration
gives these options (so that an error names the key to fix). The labelled-chip data modules
(``data.init_args.label_field``...) and ``dinogeo validate`` (``--label_field``...) build it from
their flat options; the label readers take it whole.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from dataclasses import field as record_field
from pathlib import Path

from dinogeo.errors import ConfigError
from dinogeo.labels.sources import LabelKeys, LabelSource, parse_label_source

__all__ = ["LabelSpec"]


@dataclass(frozen=True)
class LabelSpec:
    """How labels are read.

    Args:
        field: class attribute of vector labels (guessed when None).
        layer: layer of a multi-layer vector file (a QGIS layer source may name it instead).
        crs: CRS of label coordinates stored without one (a CSV with X/Y or WKT columns and no
            ``.prj``), e.g. ``EPSG:4326``.
        point_radius: disk radius in pixels for point labels (0: one pixel).
        keys: the names of these options in the caller's configuration (error messages).

    Raises:
        ConfigError: ``point_radius`` negative or not finite.
    """

    field: str | None = None
    layer: str | None = None
    crs: str | None = None
    point_radius: float = 0.0
    keys: LabelKeys = record_field(default_factory=LabelKeys, compare=False)

    def __post_init__(self) -> None:
        radius = float(self.point_radius)
        if not math.isfinite(radius) or radius < 0:
            raise ConfigError(
                f"{self.keys.point_radius} must be a number of pixels >= 0 (0: one pixel per "
                f"point), got {self.point_radius!r}"
            )
        object.__setattr__(self, "point_radius", radius)

    def source(self, path: str | Path) -> LabelSource:
        """The label source of a path or QGIS layer URI, in this spec's layer.

        Raises:
            LabelError: unknown URI parts, or a layer named twice with different names.
        """
        return parse_label_source(path, layer=self.layer, keys=self.keys)

    def for_validation(self, layer: str | None, field: str | None, keys: LabelKeys) -> LabelSpec:
        """The spec of separate validation labels: their own layer and field (default: this one's)."""
        return replace(self, layer=layer, field=field or self.field, keys=keys)
