"""Metrics of a model bundle on labelled imagery (the tool behind ``dinogeo validate``)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rasterio.windows import transform as window_transform
from torch.utils.data import default_collate
from tqdm import tqdm

from dinogeo.data.imagery_spec import ImagerySpec
from dinogeo.data.sample_types import LabeledSample
from dinogeo.errors import ConfigError, LabelError, NoValidDataError
from dinogeo.labels.independence import check_independent
from dinogeo.labels.label_spec import LabelSpec
from dinogeo.labels.sources import LabelSource, parse_label_source
from dinogeo.labels.split import ChipSplit
from dinogeo.labels.vectors import IGNORE_INDEX
from dinogeo.models.bundle import ModelBundle, load_bundle
from dinogeo.models.task_card import TaskCard
from dinogeo.trainers.chip_dataset import LabeledChipDataset
from dinogeo.trainers.chip_labels import Labels
from dinogeo.trainers.chip_selection import select_chips
from dinogeo.trainers.imagery import ImageReader, SceneImages, scene_grid
from dinogeo.trainers.metrics import TaskMetrics
from dinogeo.trainers.validation_report import ValidationSamples, check_report, write_report

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
    label_crs: str | None = None,
    point_radius: float = 0.0,
    chip_size: int = 256,
    batch_size: int = 4,
    progress: bool = True,
    report_dir: str | Path | None = None,
    max_points: int = 100_000,
    overwrite: bool = False,
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
        label_layer: layer of a multi-layer vector file (``labels`` may also be a QGIS layer
            source, ``labels.gpkg|layername=val``).
        label_crs: CRS of label coordinates stored without one (CSV tables).
        point_radius: disk radius in pixels for point labels.
        chip_size: prediction window side in pixels.
        batch_size: windows per forward pass.
        progress: show a progress bar.
        report_dir: also write there ``metrics.json``, the error matrix and per-class user's/
            producer's accuracy as CSV, and the labelled pixels with reference and predicted class
            as a styled GeoPackage layer (see :mod:`dinogeo.trainers.validation_report`).
        max_points: most points in that layer (a seeded subset beyond; tables count every pixel).
        overwrite: replace existing report files.

    Returns:
        ``{metric: value}`` (see :class:`~dinogeo.trainers.metrics.TaskMetrics`).

    Raises:
        ConfigError: a change bundle without ``image2`` (or the reverse).
        NoValidDataError: no labelled pixel over valid imagery.
    """
    bundle_path = None if isinstance(bundle, ModelBundle) else bundle
    if not isinstance(bundle, ModelBundle):
        bundle = load_bundle(bundle)
    if (bundle.num_inputs == 2) != (image2 is not None):
        raise ConfigError(
            f"bundle task {bundle.task.name!r} takes {bundle.num_inputs} image(s): "
            + ("pass --image2 (date 2)" if bundle.num_inputs == 2 else "drop --image2")
        )

    # the flat options of ``dinogeo validate`` as the records the readers take
    imagery = ImagerySpec(sensor=sensor, bands=bands, scale=scale, offset=offset)
    label_spec = LabelSpec(label_field, label_layer, label_crs, point_radius)
    second = None if image2 is None else (str(image2),)
    reader = SceneImages((str(image),), second).open(bundle.card, imagery)[0]
    first = scene_grid(reader)
    source = label_spec.source(labels)
    lab = Labels(source, bundle.task, first, label_spec)
    _warn_if_training_labels(bundle, source)
    whole = ChipSplit(chip_size=chip_size, block_size=chip_size, val_fraction=0.0)
    _, chips = select_chips(
        [reader], [lab], whole, min_labelled=1, train_stride=chip_size, all_to_val=True
    )
    if not chips:
        raise NoValidDataError(
            f"{labels}: no labelled pixel lies on valid pixels of {image}; check that the labels "
            "cover the imagery and that the imagery is not nodata there"
        )
    if report_dir is not None:
        check_report(report_dir, overwrite=overwrite)
    data = LabeledChipDataset([reader], [lab], chips)
    metrics = TaskMetrics(bundle.task)
    samples: list[ValidationSamples] = []
    device = next(bundle.model.parameters()).device
    starts = range(0, len(data), batch_size)
    for start in tqdm(starts, desc="validate", unit="batch", disable=not progress):
        items = [data[i] for i in range(start, min(start + batch_size, len(data)))]
        batch: LabeledSample = default_collate(items)  # stacks every tensor
        images = (batch["image1"], batch["image2"]) if bundle.num_inputs == 2 else (batch["image"],)
        output = bundle.predict_batch(*(image.to(device) for image in images))
        metrics.update(output.cpu(), batch["mask"])
        if report_dir is not None:
            batch_chips = chips[start : start + len(items)]
            samples += _samples(output.cpu(), batch["mask"], batch_chips, first, bundle.task)
    result = metrics.compute()
    if not result:
        raise NoValidDataError(f"{labels}: no labelled pixel over valid imagery of {image}")
    result["chips"] = float(len(chips))
    final = {k: float(v) if np.isfinite(v) else float("nan") for k, v in result.items()}
    if report_dir is not None:
        info = {"model": str(bundle_path or ""), "image": str(image), "labels": str(source)}
        write_report(
            report_dir, bundle.task, final, ValidationSamples.concat(samples), first.crs,
            info=info, max_points=max_points, overwrite=overwrite,
        )  # fmt: skip
    return final


def _samples(
    output: torch.Tensor,
    mask: torch.Tensor,
    chips: list[Any],
    reader: ImageReader,
    task: TaskCard,
) -> list[ValidationSamples]:
    """The labelled pixels of a batch of chips: centres, reference and prediction."""
    out = []
    pred = output.argmax(dim=1) if task.is_classification else output[:, 0]
    for i, chip in enumerate(chips):
        ref = mask[i].numpy()
        keep = ref != IGNORE_INDEX if task.is_classification else np.isfinite(ref)
        if not keep.any():
            continue
        rows, cols = np.nonzero(keep)
        t = window_transform(chip.window, reader.transform)
        xs, ys = t @ (cols + 0.5, rows + 0.5)
        out.append(
            ValidationSamples(
                np.asarray(xs, dtype=np.float64),
                np.asarray(ys, dtype=np.float64),
                ref[keep],
                pred[i].numpy()[keep],
            )
        )
    return out


def _training_sources(config: dict[str, Any]) -> list[LabelSource]:
    data = config.get("data") or {}
    labels = data.get("labels")
    if not labels:
        return []
    paths = [labels] if isinstance(labels, str) else [str(p) for p in labels]
    out = []
    for p in paths:
        try:
            out.append(parse_label_source(p, layer=data.get("label_layer")))
        except LabelError:
            continue
    return out


def _warn_if_training_labels(bundle: ModelBundle, source: LabelSource) -> None:
    """Warn when the validation labels are those the bundle was trained on (its training config)."""
    for train in _training_sources(bundle.training_config):
        try:
            check_independent(train, source, keys=("the bundle's training labels", "labels"))
        except LabelError as err:
            warnings.warn(str(err), UserWarning, stacklevel=3)
            return
