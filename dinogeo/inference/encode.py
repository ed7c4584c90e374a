"""How blended model outputs become output raster bands, following the task card.

* segmentation / change: band 1 holds class values (``task.classes[k].value`` for output channel
  ``k``, the argmax of the blended probabilities); optional probability bands (one per class) and a
  confidence band (the top probability) are stored in the same integer dtype with GDAL scale/offset
  metadata so that ``value * scale + offset`` is the probability.
* regression: band 1 holds values in task units, clipped to ``valid_range``; float dtypes store them
  as they are, integer dtypes (e.g. uint16) store them scaled over ``valid_range`` with scale/offset.

Pixels where no valid input contributed get the task's nodata value in every band.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from dinogeo.errors import ConfigError
from dinogeo.models.task_card import TaskCard

__all__ = ["OutputSpec", "make_output_spec"]


def _code_range(dtype: str, nodata: float | None, where: str) -> tuple[int, int]:
    """Integer codes usable for data in ``dtype``, leaving out the nodata value."""
    info = np.iinfo(np.dtype(dtype))
    lo, hi = int(info.min), int(info.max)
    if nodata is None or nodata == hi:
        return lo, hi - 1
    if nodata == lo:
        return lo + 1, hi
    raise ConfigError(
        f"{where}: scaled {dtype} bands need nodata at the dtype's minimum ({lo}) or maximum "
        f"({hi}), not {nodata}; change 'nodata' in the task card"
    )


@dataclass
class OutputSpec:
    """Output bands of a prediction raster.

    Attributes:
        task: the task card.
        dtype: numpy dtype of every band.
        nodata: nodata value of every band.
        descriptions: one description per band.
        scales: GDAL scale per band (``value * scale + offset`` gives physical values).
        offsets: GDAL offset per band.
        probabilities: whether per-class probability bands follow the class band.
        confidence: whether a confidence band is last.
    """

    task: TaskCard
    dtype: str
    nodata: float
    descriptions: list[str]
    scales: list[float] = field(default_factory=list)
    offsets: list[float] = field(default_factory=list)
    probabilities: bool = False
    confidence: bool = False
    _codes: tuple[int, int] = (0, 0)

    @property
    def bands(self) -> int:
        """Number of output bands."""
        return len(self.descriptions)

    @property
    def channels(self) -> int:
        """Number of model output channels."""
        return self.task.num_outputs

    def _encode(self, values: np.ndarray, band: int) -> np.ndarray:
        """Scale physical values into integer codes of one band."""
        lo, hi = self._codes
        q = np.rint((values - self.offsets[band]) / self.scales[band])
        return np.clip(q, lo, hi).astype(self.dtype)

    def finish(self, sums: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Turn blended weighted sums into output bands.

        Args:
            sums: ``(channels, n, width)`` weighted sums of model outputs.
            weights: ``(n, width)`` summed weights (0 where no valid input).

        Returns:
            ``(bands, n, width)`` array in :attr:`dtype`, nodata where ``weights == 0``.
        """
        valid = weights > 0
        out = np.full((self.bands, *weights.shape), self.nodata, dtype=self.dtype)
        if not valid.any():
            return out
        mean = sums[:, valid] / weights[valid]
        if self.task.is_classification:
            values = np.asarray(self.task.class_values)
            top = np.argmax(mean, axis=0)
            out[0][valid] = values[top].astype(self.dtype)
            band = 1
            if self.probabilities:
                for k in range(mean.shape[0]):
                    out[band][valid] = self._encode(np.clip(mean[k], 0.0, 1.0), band)
                    band += 1
            if self.confidence:
                out[band][valid] = self._encode(np.clip(mean.max(axis=0), 0.0, 1.0), band)
            return out
        value = mean[0]
        if self.task.valid_range is not None:
            value = np.clip(value, *self.task.valid_range)
        if np.dtype(self.dtype).kind == "f":
            out[0][valid] = value.astype(self.dtype)
        else:
            out[0][valid] = self._encode(value, 0)
        return out


def make_output_spec(
    task: TaskCard, *, probabilities: bool = False, confidence: bool = False
) -> OutputSpec:
    """Build the output bands for a task card.

    Args:
        task: the task card.
        probabilities: add one probability band per class (classification tasks).
        confidence: add a band with the top class probability (classification tasks).

    Returns:
        The :class:`OutputSpec`.

    Raises:
        ConfigError: probabilities/confidence asked for a regression task, or an integer
            regression dtype without ``valid_range``.
    """
    where = f"task card {task.name!r}"
    dtype = task.dtype
    kind = np.dtype(dtype).kind
    if task.is_classification:
        if kind == "f":
            raise ConfigError(f"{where}: class outputs need an integer dtype, got {dtype}")
        nodata = float(task.nodata) if task.nodata is not None else float(np.iinfo(dtype).max)
        descriptions = [task.name]
        scales, offsets = [1.0], [0.0]
        codes = (0, 0)
        if probabilities or confidence:
            codes = _code_range(dtype, nodata, where)
            step = 1.0 / (codes[1] - codes[0])
            extra = [f"p({name})" for name in task.class_names] if probabilities else []
            extra += ["confidence"] if confidence else []
            descriptions += extra
            scales += [step] * len(extra)
            offsets += [-codes[0] * step] * len(extra)
        return OutputSpec(
            task, dtype, nodata, descriptions, scales, offsets, probabilities, confidence, codes
        )
    if probabilities or confidence:
        raise ConfigError(
            f"{where} is a regression task: probabilities and confidence bands apply to class "
            "outputs only; drop --probabilities/--confidence"
        )
    label = f"{task.name} ({task.units})" if task.units else task.name
    if kind == "f":
        nodata = float("nan") if task.nodata is None else float(task.nodata)
        return OutputSpec(task, dtype, nodata, [label], [1.0], [0.0])
    if task.valid_range is None:
        raise ConfigError(
            f"{where}: an integer regression dtype ({dtype}) needs 'valid_range' to scale values; "
            "add valid_range: [min, max] or use dtype float32"
        )
    nodata = float(task.nodata) if task.nodata is not None else float(np.iinfo(dtype).max)
    codes = _code_range(dtype, nodata, where)
    lo, hi = task.valid_range
    scale = (hi - lo) / (codes[1] - codes[0])
    offset = lo - codes[0] * scale
    if not math.isfinite(scale) or scale <= 0:
        raise ConfigError(f"{where}: invalid valid_range {task.valid_range}")
    return OutputSpec(task, dtype, nodata, [label], [scale], [offset], _codes=codes)
