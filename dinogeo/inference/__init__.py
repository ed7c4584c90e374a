"""Streaming prediction and embedding of rasters of any size into styled, georeferenced outputs."""

from __future__ import annotations

from dinogeo.inference.embed import EmbedResult, embed_raster
from dinogeo.inference.predict import PredictResult, load_model, predict_change, predict_raster

__all__ = [
    "EmbedResult",
    "PredictResult",
    "embed_raster",
    "load_model",
    "predict_change",
    "predict_raster",
]
