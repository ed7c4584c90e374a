"""Metrics of a model bundle on labelled imagery (the tool behind ``dinogeo validate``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from dinogeo.errors import ConfigError, NoValidDataError
from dinogeo.models.bundle import ModelBundle, load_bundle
from dinogeo.trainers.datamodule import ChipDataset, open_labels, select_chips
from dinogeo.trainers.imagery import ImageReader
from dinogeo.trainers.metrics import TaskMetrics

__all__ = ["evaluate_bundle"]


def evaluate_bundle(
    bundle: ModelBundle | str | Path,
    image: str | Path,
    labels: str | Path,
    *,
    image2: str | Path | None = None,
    sensor: str | None = None,
    bands: list[str] | None = None,
    scale: float | None = None,
    offset: float | None = None,
    label_field: str | None = None,
    label_layer: str | None = None,
    point_radius: float = 0.0,
    chip_size: int = 256,
    batch_size: int = 4,
    progress: bool = True,
) -> dict[str, float]:
    """Predict every labelled chip of an image and compute the task's metrics.

    Args:
        bundle: a loaded bundle or its path.
        image: the image (date 1 for change bundles).
        labels: label raster or vector file (polygons/points).
        image2: date 2 (change bundles), resampled onto ``image``'s grid when grids differ.
        sensor: the imagery's sensor (default: the weight card's, with its scale/offset).
        bands: the file's band names in file order.
        scale: DN-to-reflectance scale override.
        offset: offset override.
        label_field: class attribute of vector labels.
        label_layer: layer of a multi-layer vector file.
        point_radius: disk radius in pixels for point labels.
        chip_size: prediction window side in pixels.
        batch_size: windows per forward pass.
        progress: show a progress bar.

    Returns:
        ``{metric: value}`` (see :class:`~dinogeo.trainers.metrics.TaskMetrics`).

    Raises:
        ConfigError: a change bundle without ``image2`` (or the reverse).
        NoValidDataError: no labelled pixel over valid imagery.
    """
    if not isinstance(bundle, ModelBundle):
        bundle = load_bundle(bundle)
    if (bundle.num_inputs == 2) != (image2 is not None):
        raise ConfigError(
            f"bundle task {bundle.task.name!r} takes {bundle.num_inputs} image(s): "
            + ("pass --image2 (date 2)" if bundle.num_inputs == 2 else "drop --image2")
        )

    def open_image(path: str | Path) -> ImageReader:
        assert isinstance(bundle, ModelBundle)  # narrowed above
        return ImageReader(
            path, bundle.card, sensor=sensor, bands=bands, scale=scale, offset=offset
        )

    first = open_image(image)
    reader: ImageReader | tuple[ImageReader, ImageReader] = first
    if image2 is not None:
        reader = (first, open_image(image2).aligned_to(first))
    lab = open_labels(
        labels, bundle.task, first, field=label_field, layer=label_layer, point_radius=point_radius
    )
    _, chips = select_chips(
        [reader],
        [lab],
        chip_size=chip_size,
        block_size=chip_size,
        val_fraction=0.0,
        min_labelled=1,
        train_stride=chip_size,
        seed=0,
        all_to_val=True,
    )
    if not chips:
        raise NoValidDataError(
            f"{labels}: no labelled pixel lies on valid pixels of {image}; check that the labels "
            "cover the imagery and that the imagery is not nodata there"
        )
    data = ChipDataset([reader], [lab], chips)
    metrics = TaskMetrics(bundle.task)
    device = next(bundle.model.parameters()).device
    starts = range(0, len(data), batch_size)
    for start in tqdm(starts, desc="validate", unit="batch", disable=not progress):
        items = [data[i] for i in range(start, min(start + batch_size, len(data)))]
        batch = {k: torch.stack([it[k] for it in items]) for k in items[0]}
        keys = ("image1", "image2") if bundle.num_inputs == 2 else ("image",)
        output = bundle.predict_batch(*(batch[k].to(device) for k in keys))
        metrics.update(output.cpu(), batch["mask"])
    result = metrics.compute()
    if not result:
        raise NoValidDataError(f"{labels}: no labelled pixel over valid imagery of {image}")
    result["chips"] = float(len(chips))
    return {k: float(v) if np.isfinite(v) else float("nan") for k, v in result.items()}
