"""How a run reads its imagery for its backbone: one record shared by the data and the model.

:class:`ImagerySpec` groups the options that always travel together: the backbone (a file or an
architecture name; its weight card fixes band order and normalisation), the imagery's sensor,
the file's bands and the scale/offset overrides. A data module builds it from its flat options
(``data.init_args.sensor``...) and ``dinogeo fit`` links it into the model once; image readers,
evaluation, change pairs and the pretraining data take it whole instead of four loose keyword
arguments.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from dinogeo.data.sensors import Sensor

__all__ = ["DEFAULT_BACKBONE", "ImagerySpec"]

#: the backbone of tests and baselines: a tiny randomly initialised ViT
DEFAULT_BACKBONE = "vit_test_patch16_dinov3"


@dataclass(frozen=True)
class ImagerySpec:
    """The backbone and how the imagery is read for it.

    Args:
        backbone: backbone file or registered architecture name (random initialisation; the
            weight card is then made from ``sensor``); None where the reader is given the
            weight card itself, or no backbone is involved yet (pretraining data).
        sensor: the imagery's sensor (shipped name or YAML path); None: the weight card's, with
            the card's scale and offset.
        bands: the file's band names in file order, when it holds a subset of the sensor.
        scale: override of the sensor's DN-to-reflectance scale.
        offset: override of the sensor's offset.
    """

    backbone: str | None = None
    sensor: str | None = None
    bands: Sequence[str] | None = None
    scale: float | None = None
    offset: float | None = None

    def __post_init__(self) -> None:
        # a tuple: the record is immutable and compares equal whatever sequence was given
        if self.bands is not None:
            object.__setattr__(self, "bands", tuple(str(b) for b in self.bands))

    @property
    def band_list(self) -> list[str] | None:
        """``bands`` as a list (None when not given)."""
        return None if self.bands is None else list(self.bands)

    def calibrated(self, sensor: Sensor) -> Sensor:
        """``sensor`` with this spec's ``scale`` and ``offset`` overrides (those given)."""
        return sensor.with_scaling(self.scale, self.offset)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (``bands`` as a list), as stored in a model bundle."""
        out = asdict(self)
        out["bands"] = self.band_list
        return out
