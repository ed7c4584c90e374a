"""Model bundles to ONNX, with the metadata the QGIS Deepness plugin reads.

`Deepness <https://github.com/PUTvision/qgis-plugin-deepness>`_ runs ONNX models on map layers
and takes its defaults from the model's metadata (``metadata_props``, each value JSON-encoded):
``model_type`` (``Segmentor``/``Regressor``), ``class_names`` (output channel -> name),
``resolution`` (cm per pixel), ``tile_size``/``tiles_size`` (pixels), ``tiles_overlap`` (percent)
and ``standardization_mean``/``standardization_std``. It feeds the model the raw band values
divided by 255 and then standardised, ``(v / 255 - mean) / std``, so dinogeo writes the
standardisation that turns raw values into the bundle's normalised input exactly:
``(v * scale + offset - mu) / sigma`` = ``(v / 255 - m) / s`` with ``m = (mu - offset) / (255
scale)`` and ``s = sigma / (255 scale)``, per band (``scale``, ``offset``, ``mu``, ``sigma`` from
the weight card). dinogeo's own keys (``dinogeo_*``) carry the band names, the reflectance
normalisation, class values and colours and the task card.

The graph takes the normalised image ``image`` (N, C, tile, tile) float32, N dynamic, and returns
``probabilities`` (N, K, tile, tile) for classes (softmax, as ``predict_batch``) or ``values``
(N, 1, tile, tile) in task units clipped to the valid range. The tile side is fixed: the
backbone's rotary position embeddings are computed from the input size while tracing. A change
bundle takes one input of 2C bands, date 1's then date 2's (Deepness feeds one raster).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from dinogeo import __version__
from dinogeo.errors import ConfigError, OutputExistsError, SensorError
from dinogeo.models.bundle import ModelBundle, load_bundle

__all__ = [
    "IR_VERSION",
    "OPSET",
    "OnnxExport",
    "deepness_metadata",
    "export_onnx",
    "read_check_tile",
    "run_onnx",
]

#: ONNX opset of the exported graphs (onnxruntime >= 1.14 runs it)
OPSET = 18
#: ONNX IR version written: that of opset 18 (ONNX 1.13). The exporter writes the newest (10),
#: which the onnxruntime Deepness installs (<= 1.17) refuses ("max supported IR version: 9")
IR_VERSION = 8
#: largest accepted difference between onnxruntime and torch outputs
TOLERANCE = 1e-4


@dataclass
class OnnxExport:
    """What :func:`export_onnx` wrote.

    Attributes:
        path: the ``.onnx`` file.
        metadata: the metadata written (values JSON-encoded, as Deepness reads them).
        tile: input height and width in pixels.
        opset: ONNX opset.
        max_abs_diff: largest difference between onnxruntime and torch on the check input.
    """

    path: Path
    metadata: dict[str, str] = field(default_factory=dict)
    tile: int = 0
    opset: int = OPSET
    max_abs_diff: float = float("nan")


class _Exported(nn.Module):
    """The bundle's model with ``predict_batch``'s output step, on one (date-stacked) input."""

    def __init__(self, bundle: ModelBundle) -> None:
        super().__init__()
        self.model = bundle.model
        self.dates = bundle.num_inputs
        self.bands = bundle.card.in_chans
        self.finish = bundle.finish_output

    def forward(self, image: Tensor) -> Tensor:
        if self.dates == 2:
            out = self.model(image[:, : self.bands], image[:, self.bands :])
        else:
            out = self.model(image)
        return self.finish(out)


def _resolution_cm(bundle: ModelBundle) -> float | None:
    from dinogeo.data.sensors import load_sensor

    try:
        sensor = load_sensor(bundle.card.sensor).select(bundle.card.band_names)
    except (SensorError, ConfigError, OSError):
        return None
    gsd = [b.gsd_m for b in sensor.bands if math.isfinite(b.gsd_m)]
    return round(100.0 * min(gsd), 3) if gsd else None


def deepness_metadata(
    bundle: ModelBundle, *, tile: int, overlap: int, resolution_cm: float | None = None
) -> dict[str, str]:
    """The ONNX metadata of a bundle: Deepness's keys plus dinogeo's (values JSON-encoded).

    Args:
        bundle: the model bundle.
        tile: tile side in pixels (the graph's input size).
        overlap: overlap between tiles in pixels (Deepness takes a percentage of the tile).
        resolution_cm: ground resolution in cm per pixel (default: the finest band GSD of the
            weight card's sensor; omitted when unknown).

    Returns:
        ``{key: JSON text}``.
    """
    card, task = bundle.card, bundle.task
    scale, offset = float(card.scale), float(card.offset)
    mean = [(m - offset) / (255.0 * scale) for m in card.mean] * bundle.num_inputs
    std = [s / (255.0 * scale) for s in card.std] * bundle.num_inputs
    bands = list(card.band_names)
    if bundle.num_inputs == 2:
        bands = [f"t1_{b}" for b in bands] + [f"t2_{b}" for b in bands]
    meta: dict[str, Any] = {
        "model_type": "Segmentor" if task.is_classification else "Regressor",
        "tile_size": tile,
        "tiles_size": tile,
        "tiles_overlap": int(round(100.0 * overlap / tile)),
        "standardization_mean": mean,
        "standardization_std": std,
        "dinogeo_version": __version__,
        "dinogeo_band_names": bands,
        "dinogeo_sensor": card.sensor,
        "dinogeo_scale": scale,
        "dinogeo_offset": offset,
        "dinogeo_mean": list(card.mean),
        "dinogeo_std": list(card.std),
        "dinogeo_input": "normalised image: (DN * scale + offset - mean) / std per band",
        "dinogeo_task_card": json.loads(task.to_json()),
        "dinogeo_patch_size": int(card.patch_size),
        "dinogeo_overlap_px": overlap,
    }
    if task.is_classification:
        meta["class_names"] = {str(i): c.name for i, c in enumerate(task.classes)}
        meta["dinogeo_class_values"] = list(task.class_values)
        meta["dinogeo_class_colors"] = list(task.class_colors)
    else:
        meta["reg_output_scaling"] = 1.0
        meta["dinogeo_units"] = task.units
    resolution = resolution_cm if resolution_cm is not None else _resolution_cm(bundle)
    if resolution is not None:
        meta["resolution"] = resolution
    return {k: json.dumps(v) for k, v in meta.items()}


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's progress prints and the optimiser's per-node log lines."""
    log = logging.getLogger("onnxscript")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        log.setLevel(level)


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as err:
        raise ConfigError(
            f"ONNX export needs onnx, onnxruntime and onnxscript ({err}): pip install "
            "'dinogeo[onnx]'"
        ) from err


def read_check_tile(path: str | Path, bundle: ModelBundle, tile: int) -> np.ndarray:
    """The central ``tile`` x ``tile`` window of a raster, normalised for the bundle: (1, C, t, t).

    Nodata pixels become 0 (the mean); a change bundle gets the tile as both dates.

    Raises:
        ConfigError: the raster is smaller than the tile.
    """
    from rasterio.windows import Window

    from dinogeo.models.card_imagery import CardImage

    image = CardImage(Path(path), bundle.card)
    if image.width < tile or image.height < tile:
        raise ConfigError(
            f"{path} ({image.width} x {image.height} px) is smaller than the tile ({tile}): "
            "choose a smaller tile or another check image"
        )
    window = Window((image.width - tile) // 2, (image.height - tile) // 2, tile, tile)
    data, valid = image.read_normalized(window)
    data = np.where(valid[None], np.nan_to_num(data), 0.0).astype(np.float32)
    return np.concatenate([data] * bundle.num_inputs)[None]


def run_onnx(path: str | Path, image: np.ndarray) -> np.ndarray:
    """Run an exported model with onnxruntime (CPU) on a normalised ``(N, C, H, W)`` batch."""
    _require_onnx()
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.asarray(session.run(None, {name: image.astype(np.float32)})[0])


def export_onnx(
    bundle: ModelBundle | str | Path,
    dst: str | Path,
    *,
    tile: int = 512,
    overlap: int = 64,
    resolution_cm: float | None = None,
    check_image: str | Path | np.ndarray | None = None,
    overwrite: bool = False,
) -> OnnxExport:
    """Export a model bundle to ONNX with Deepness-compatible metadata, checked by onnxruntime.

    Args:
        bundle: a loaded bundle or its path.
        dst: the ``.onnx`` file (written to a temporary name, checked, then renamed).
        tile: input height and width in pixels (a multiple of the patch size).
        overlap: overlap between tiles Deepness should use, in pixels (below half the tile).
        resolution_cm: ground resolution in cm per pixel written for Deepness (default: from the
            sensor's band GSD).
        check_image: where onnxruntime must match torch (within 1e-4): a raster whose central
            tile is read with the weight card's bands and normalisation (both dates of a change
            model get it), or a normalised ``(N, C, tile, tile)`` array; default: two random
            normalised tiles.
        overwrite: replace an existing ``dst``.

    Returns:
        The export, with the largest onnxruntime/torch difference on the check input.

    Raises:
        ConfigError: bad tile/overlap, missing ONNX packages, or outputs that differ by more
            than 1e-4.
        OutputExistsError: ``dst`` exists and ``overwrite`` is False.
    """
    _require_onnx()
    import onnx

    dst = Path(dst)
    if dst.exists() and not overwrite:
        raise OutputExistsError(f"{dst} already exists: pass --overwrite to replace it")
    if not dst.parent.is_dir():
        raise ConfigError(f"output folder {dst.parent} does not exist: create it first")
    if not isinstance(bundle, ModelBundle):
        bundle = load_bundle(bundle)
    patch = int(bundle.card.patch_size)
    if tile <= 0 or tile % patch:
        raise ConfigError(f"tile {tile} must be a positive multiple of the patch size {patch}")
    if not 0 <= overlap < tile // 2:
        raise ConfigError(f"overlap {overlap} must be between 0 and half the tile ({tile // 2})")
    channels = bundle.card.in_chans * bundle.num_inputs
    if check_image is None:
        check_input = np.random.default_rng(0).standard_normal((2, channels, tile, tile))
    elif isinstance(check_image, str | Path):
        check_input = read_check_tile(check_image, bundle, tile)
    else:
        check_input = check_image
    check_input = np.asarray(check_input, dtype=np.float32)
    if check_input.shape[1:] != (channels, tile, tile):
        raise ConfigError(
            f"check_input has shape {check_input.shape}; the model takes (N, {channels}, {tile}, "
            f"{tile})"
        )
    module = _Exported(bundle).to("cpu").float().eval()
    noise = np.random.default_rng(1).standard_normal((2, channels, tile, tile))
    example = torch.from_numpy(noise.astype(np.float32))
    output = "probabilities" if bundle.task.is_classification else "values"
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}.onnx")
    try:
        with torch.no_grad(), _quiet_exporter():
            program = torch.onnx.export(
                module,
                (example,),
                input_names=["image"],
                output_names=[output],
                dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},),
                opset_version=OPSET,
                dynamo=True,
                verbose=False,
            )
        if program is None:  # only the legacy exporter returns nothing
            raise ConfigError("torch.onnx.export returned no program")
        program.save(str(tmp))
        model = onnx.load(str(tmp))
        meta = deepness_metadata(bundle, tile=tile, overlap=overlap, resolution_cm=resolution_cm)
        del model.metadata_props[:]
        for key, value in meta.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        model.doc_string = f"dinogeo {bundle.task.name} model ({bundle.card.arch})"
        model.ir_version = IR_VERSION
        onnx.checker.check_model(model)
        onnx.save(model, str(tmp))
        with torch.no_grad():
            reference = module(torch.from_numpy(check_input)).numpy()
        got = run_onnx(tmp, check_input)
        diff = float(np.abs(got - reference).max())
        if not diff <= TOLERANCE:
            raise ConfigError(
                f"the ONNX graph differs from the torch model by {diff:.3g} (> {TOLERANCE}) on the "
                "check input: this model does not export faithfully; report it with the bundle's "
                "architecture"
            )
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
        Path(str(tmp) + ".data").unlink(missing_ok=True)
    return OnnxExport(dst, meta, tile, OPSET, diff)
