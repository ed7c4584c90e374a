"""What ``dinogeo validate`` writes besides the metrics: the tables and the layer QGIS users expect.

For class maps, accuracy assessment is read from an **error matrix** (rows: map = predicted class,
columns: reference class, as in Congalton & Green and Olofsson et al.), with each class's
**user's accuracy** (correct / map total of the row: 1 - commission error) and **producer's
accuracy** (correct / reference total of the column: 1 - omission error). :func:`write_report`
writes into one folder:

* ``metrics.json``: the metrics of :class:`~dinogeo.trainers.metrics.TaskMetrics`;
* ``error_matrix.csv`` (classes): counts of labelled pixels, totals, user's and producer's
  accuracy in the margins and the overall accuracy in the corner;
* ``class_accuracy.csv`` (classes): one row per class (reference and map pixels, correct, user's
  and producer's accuracy, commission and omission errors, F1, IoU);
* ``validation_points.gpkg``: one point per labelled pixel centre (at most ``max_points``, a seeded
  random subset beyond) with the reference and predicted class (value and name) and ``result``
  (``correct``/``wrong``), styled in QGIS by result; for regression the reference, predicted
  value and error.
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pyogrio

from dinogeo.inference.vector_style import GPKG_OPTIONS, point_qml, write_layer_style
from dinogeo.inference.writer import check_output_path
from dinogeo.models.task_card import TaskCard

__all__ = ["REPORT_FILES", "ValidationSamples", "check_report", "error_matrix", "write_report"]

REPORT_FILES = (
    "metrics.json",
    "error_matrix.csv",
    "class_accuracy.csv",
    "validation_points.gpkg",
)
POINTS_LAYER = "validation_points"
_CORRECT, _WRONG = "#1a9641", "#d7191c"


@dataclass
class ValidationSamples:
    """Every labelled pixel of a validation run.

    Attributes:
        x: pixel-centre x in the imagery CRS.
        y: pixel-centre y in the imagery CRS.
        reference: reference class channel index (classes) or value (regression).
        predicted: predicted class channel index or value.
    """

    x: np.ndarray
    y: np.ndarray
    reference: np.ndarray
    predicted: np.ndarray

    @classmethod
    def concat(cls, parts: list[ValidationSamples]) -> ValidationSamples:
        """One set from the parts collected chip by chip."""
        keys = ("x", "y", "reference", "predicted")
        return cls(*(np.concatenate([getattr(p, k) for p in parts]) for k in keys))

    def __len__(self) -> int:
        return int(self.x.size)


def error_matrix(samples: ValidationSamples, classes: int) -> np.ndarray:
    """``(classes, classes)`` pixel counts: row = predicted (map) class, column = reference."""
    flat = samples.predicted.astype(np.int64) * classes + samples.reference.astype(np.int64)
    return np.bincount(flat, minlength=classes * classes).reshape(classes, classes)


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else float("nan")


def _cell(value: float) -> str:
    return "" if isinstance(value, float) and math.isnan(value) else f"{value:.4f}"


def _atomic(path: Path, write: Any) -> Path:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}{path.suffix}")
    tmp.unlink(missing_ok=True)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _write_matrix(path: Path, task: TaskCard, matrix: np.ndarray) -> Path:
    names = task.class_names
    correct = np.diag(matrix)
    rows_total, cols_total = matrix.sum(axis=1), matrix.sum(axis=0)
    total = int(matrix.sum())

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="", encoding="utf-8") as handle:
            out = csv.writer(handle)
            out.writerow(["map \\ reference", *names, "total", "user's accuracy"])
            for i, name in enumerate(names):
                ua = _ratio(correct[i], rows_total[i])
                out.writerow([name, *matrix[i].tolist(), int(rows_total[i]), _cell(ua)])
            out.writerow(["total", *cols_total.tolist(), total, ""])
            pa = [_cell(_ratio(correct[j], cols_total[j])) for j in range(len(names))]
            overall = _cell(_ratio(correct.sum(), total))
            out.writerow(["producer's accuracy", *pa, "", f"overall accuracy {overall}"])

    return _atomic(path, write)


def _write_class_table(path: Path, task: TaskCard, matrix: np.ndarray) -> Path:
    correct = np.diag(matrix)
    rows_total, cols_total = matrix.sum(axis=1), matrix.sum(axis=0)

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="", encoding="utf-8") as handle:
            out = csv.writer(handle)
            out.writerow(
                ["class_value", "class_name", "reference_pixels", "map_pixels", "correct",
                 "users_accuracy", "producers_accuracy", "commission_error", "omission_error",
                 "f1", "iou"]
            )  # fmt: skip
            for i, c in enumerate(task.classes):
                ua = _ratio(correct[i], rows_total[i])
                pa = _ratio(correct[i], cols_total[i])
                f1 = _ratio(2 * correct[i], rows_total[i] + cols_total[i])
                iou = _ratio(correct[i], rows_total[i] + cols_total[i] - correct[i])
                out.writerow(
                    [c.value, c.name, int(cols_total[i]), int(rows_total[i]), int(correct[i]),
                     _cell(ua), _cell(pa), _cell(1 - ua), _cell(1 - pa), _cell(f1), _cell(iou)]
                )  # fmt: skip

    return _atomic(path, write)


def _write_points(
    path: Path, task: TaskCard, samples: ValidationSamples, crs: Any, max_points: int, seed: int
) -> Path:
    keep = np.arange(len(samples))
    if len(keep) > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(len(keep), max_points, replace=False))
    ref, pred = samples.reference[keep], samples.predicted[keep]
    if task.is_classification:
        values = np.asarray(task.class_values)
        names = np.asarray(task.class_names, dtype=object)
        ok = ref == pred
        columns: dict[str, Any] = {
            "reference": values[ref.astype(np.int64)].astype(np.int32),
            "reference_name": names[ref.astype(np.int64)],
            "predicted": values[pred.astype(np.int64)].astype(np.int32),
            "predicted_name": names[pred.astype(np.int64)],
            "result": np.where(ok, "correct", "wrong"),
        }
        qml = point_qml("result", [("correct", "correct", _CORRECT), ("wrong", "wrong", _WRONG)])
    else:
        columns = {
            "reference": ref.astype(np.float64),
            "predicted": pred.astype(np.float64),
            "error": (pred - ref).astype(np.float64),
        }
        qml = point_qml(None, [])
    frame = gpd.GeoDataFrame(
        columns, geometry=gpd.points_from_xy(samples.x[keep], samples.y[keep]), crs=crs
    )

    def write(tmp: Path) -> None:
        pyogrio.write_dataframe(
            frame, tmp, layer=POINTS_LAYER, driver="GPKG", dataset_options=GPKG_OPTIONS
        )
        write_layer_style(tmp, POINTS_LAYER, qml, "")

    return _atomic(path, write)


def check_report(folder: str | Path, *, overwrite: bool = False) -> None:
    """Fail before any work when the report cannot be written.

    Raises:
        OutputExistsError: a report file exists and ``overwrite`` is False.
        RasterReadError: the folder's parent is missing or not writable.
    """
    folder = Path(folder)
    if not folder.is_dir():
        check_output_path(folder, overwrite=False)  # the parent must exist and be writable
        return
    for name in REPORT_FILES:
        check_output_path(folder / name, overwrite=overwrite)


def write_report(
    folder: str | Path,
    task: TaskCard,
    metrics: dict[str, float],
    samples: ValidationSamples,
    crs: Any,
    *,
    info: dict[str, Any] | None = None,
    max_points: int = 100_000,
    seed: int = 0,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Write the metrics, the error matrix, the per-class accuracy table and the points layer.

    Args:
        folder: output folder (created when its parent exists).
        task: the task card (class values, names).
        metrics: the metrics (``metrics.json``).
        samples: every labelled pixel with its reference and prediction.
        crs: the imagery CRS (of ``samples.x``/``y``).
        info: extra JSON-ready fields for ``metrics.json`` (model, image, labels...).
        max_points: most points in ``validation_points.gpkg`` (a seeded random subset beyond;
            the tables always count every pixel).
        seed: seed of that subset.
        overwrite: replace existing report files.

    Returns:
        ``{file name: path}`` of what was written.

    Raises:
        OutputExistsError: a report file exists and ``overwrite`` is False.
    """
    folder = Path(folder)
    check_report(folder, overwrite=overwrite)
    folder.mkdir(exist_ok=True)
    out: dict[str, Path] = {}
    report = {**(info or {}), "task": task.name, "metrics": metrics}
    out["metrics.json"] = _atomic(
        folder / "metrics.json", lambda tmp: tmp.write_text(json.dumps(report, indent=2))
    )
    if task.is_classification:
        matrix = error_matrix(samples, task.num_outputs)
        out["error_matrix.csv"] = _write_matrix(folder / "error_matrix.csv", task, matrix)
        out["class_accuracy.csv"] = _write_class_table(folder / "class_accuracy.csv", task, matrix)
    out["validation_points.gpkg"] = _write_points(
        folder / "validation_points.gpkg", task, samples, crs, max_points, seed
    )
    return out
