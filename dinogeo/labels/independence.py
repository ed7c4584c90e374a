"""Validation labels must not be the training labels.

Validating on the polygons a head was trained on measures how well it memorised them, not its
accuracy. :func:`check_independent` refuses a validation source that is the training source (same
file, layer and filter, also through a QGIS layer URI) or whose features are all training features
(the same layer saved again under another name or format), and warns when only some of them are.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import shapely

from dinogeo.errors import LabelError
from dinogeo.labels.sources import LabelSource
from dinogeo.labels.vectors import VectorLabels

__all__ = ["check_independent", "shared_features"]

#: coordinates are compared on this grid (in the imagery CRS units) to see through reprojection
_GRID = 1e-3


def _same_file(a: LabelSource, b: LabelSource) -> bool:
    try:
        return os.path.samefile(a.path, b.path)
    except OSError:
        return a.path.resolve() == b.path.resolve()


def _keys(labels: VectorLabels) -> set[tuple[bytes, int]]:
    geoms = shapely.normalize(shapely.set_precision(labels.frame.geometry.to_numpy(), _GRID))
    wkb = shapely.to_wkb(geoms)
    return {(bytes(g), int(c)) for g, c in zip(wkb, labels.class_index, strict=True)}


def shared_features(train: VectorLabels, val: VectorLabels) -> int:
    """Number of validation features (geometry and class) that are also training features.

    Both must be in the same CRS (the imagery's, as :class:`~dinogeo.trainers.chip_labels.Labels`
    reads them).
    """
    train_keys = _keys(train)
    val_keys = _keys(val)
    return int(np.sum([k in train_keys for k in val_keys]))


def check_independent(
    train_source: LabelSource,
    val_source: LabelSource,
    train: VectorLabels | None = None,
    val: VectorLabels | None = None,
    *,
    keys: tuple[str, str] = ("labels", "val_labels"),
) -> None:
    """Refuse validation labels that are the training labels; warn when some features are shared.

    Args:
        train_source: where the training labels come from.
        val_source: where the validation labels come from.
        train: the training features (vector labels), to compare feature by feature.
        val: the validation features.
        keys: the option names of the training and validation labels, for the message.

    Raises:
        LabelError: same source, or every validation feature is a training feature.
    """
    train_key, val_key = keys
    fix = (
        f"Fix: set {val_key} to labels collected independently (e.g. a separate points "
        "layer); when fitting, leaving it out holds whole spatial blocks of the training labels "
        "out instead (val_fraction)"
    )
    if (
        _same_file(train_source, val_source)
        and train_source.layer == val_source.layer
        and train_source.where == val_source.where
    ):
        raise LabelError(
            f"the validation labels {val_source} are the training labels ({train_key} = "
            f"{train_source}): the metrics would measure how well the head remembers its "
            f"training labels, not its accuracy. {fix}"
        )
    if train is None or val is None:
        return
    shared = shared_features(train, val)
    if shared == 0:
        return
    total = len(_keys(val))
    if shared >= total:
        raise LabelError(
            f"every feature of the validation labels {val_source} ({total}) is also a training "
            f"feature of {train_source} (same geometry and class): they are a copy of the "
            f"training labels. {fix}"
        )
    warnings.warn(
        f"{shared} of {total} validation features of {val_source} are also training features of "
        f"{train_source} (same geometry and class); the validation metrics are optimistic",
        UserWarning,
        stacklevel=2,
    )
