"""``dinogeo predict``: :func:`predict_raster`, or :func:`predict_change` for a change bundle.

Usage::

    dinogeo predict --model land_cover.safetensors scene.tif -o scene_landcover.tif
    dinogeo predict --model land_cover.safetensors tiles/ -o out/ --mosaic
    dinogeo predict --model change.safetensors date1.tif date2.tif -o change.tif
    dinogeo predict --config predict.yaml          # keys: predict_raster's keyword names
"""

from __future__ import annotations

from typing import Any

from dinogeo.errors import ConfigError

__all__ = ["run"]


def run(options: dict[str, Any]) -> int:
    """Predict with the bundle; a change bundle takes exactly two inputs (date 1, date 2).

    Args:
        options: the keyword arguments of :func:`~dinogeo.inference.predict.predict_raster`.

    Returns:
        The exit status (0 on success).
    """
    from dinogeo.inference.predict import load_model, predict_change, predict_raster

    model = load_model(options["model"], options["device"])
    rest = {k: v for k, v in options.items() if k not in ("model", "src", "dst")}
    src = options["src"]
    inputs = src if isinstance(src, list) else [src]
    if model.task.kind == "change":
        if len(inputs) != 2:
            raise ConfigError(
                f"{options['model']} is a change model: give two inputs (date 1, date 2), got "
                f"{len(inputs)}"
            )
        predict_change(model, inputs[0], inputs[1], options["dst"], **rest)
    else:
        predict_raster(model, inputs, options["dst"], **rest)
    return 0
