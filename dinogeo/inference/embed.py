"""``embed_raster``: dense backbone features of a raster of any size, plus a PCA picture.

Patch features (``D`` values per ``patch x patch`` input pixels) of one backbone block are streamed
exactly like predictions (overlapping windows, read-ahead, blended at patch resolution, strips) into
a georeferenced zarr store (``data`` array ``(D, H/p, W/p)`` with CF/GeoZarr georeferencing, readable
by :func:`dinogeo.data.opener.open_source` and xarray) or a float32 COG when ``dst`` ends with
``.tif``. A subsample of the features is collected on the way; PCA fitted on it maps features to
RGB (3 components scaled by their 2nd-98th percentiles), written as a GeoTIFF and a PNG.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
import torch
import zarr
from affine import Affine
from rasterio.windows import Window
from tqdm.auto import tqdm

from dinogeo.data.geozarr import GeoInfo, encode_geoinfo, spatial_ref_attrs
from dinogeo.errors import ConfigError
from dinogeo.inference.inputs import expand_inputs, open_for_card, window_reader
from dinogeo.inference.stream import StreamSpec, stream_strips
from dinogeo.inference.tiling import TileGrid
from dinogeo.inference.writer import BandLayout, StripWriter, check_output_path, gdal_cache

__all__ = ["EmbedResult", "embed_raster", "fit_pca"]

_MAX_SAMPLES = 20000


@dataclass
class EmbedResult:
    """What an embedding run wrote.

    Attributes:
        features: the zarr store or GeoTIFF of features.
        pca_tif: PCA-to-RGB GeoTIFF (or None).
        pca_png: PCA-to-RGB PNG (or None).
        shape: ``(D, rows, cols)`` of the features.
        seconds: wall time.
    """

    features: Path
    pca_tif: Path | None
    pca_png: Path | None
    shape: tuple[int, int, int]
    seconds: float


def fit_pca(samples: np.ndarray, n: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fit PCA on ``(N, D)`` samples; return mean, components ``(n, D)`` and percentile limits.

    Component signs are fixed (largest loading positive) so results are deterministic; the limits
    are the 2nd and 98th percentiles of each projected component, shape ``(2, n)``.
    """
    if samples.shape[0] < 2:
        raise ConfigError("too few valid feature pixels to fit a PCA picture; check the input")
    mean = samples.mean(axis=0)
    centred = samples - mean
    _, _, vt = np.linalg.svd(centred.astype(np.float64), full_matrices=False)
    comps = vt[:n]
    signs = np.sign(comps[np.arange(comps.shape[0]), np.abs(comps).argmax(axis=1)])
    comps = comps * signs[:, None]
    proj = centred @ comps.T
    limits = np.percentile(proj, [2, 98], axis=0)
    return mean, comps, limits


def _zarr_create(
    path: Path, info: GeoInfo, chunk_rows: int, meta: dict[str, Any]
) -> zarr.Array[Any]:
    root = zarr.open_group(str(path), mode="w")
    root.attrs.update({"dinogeo": encode_geoinfo(info), "dinogeo_embedding": meta})
    data = root.create_array(
        "data",
        shape=(info.count, info.height, info.width),
        chunks=(info.count, min(chunk_rows, info.height), min(256, info.width)),
        dtype="float32",
        fill_value=float("nan"),
        dimension_names=("band", "y", "x"),
        attributes={"grid_mapping": "spatial_ref", "band_names": list(info.band_names)},
    )
    sref = root.create_array("spatial_ref", shape=(), dtype="int32", fill_value=0)
    sref.attrs.update(spatial_ref_attrs(info.crs_wkt, info.transform))
    t = Affine(*info.transform)
    for name, n, coords in (
        ("x", info.width, t.c + t.a * (np.arange(info.width) + 0.5)),
        ("y", info.height, t.f + t.e * (np.arange(info.height) + 0.5)),
    ):
        arr = root.create_array(name, shape=(n,), dtype="float64", dimension_names=(name,))
        arr[:] = coords
    return data


def _read_strips(path: Path, rows: int) -> Iterator[tuple[int, np.ndarray]]:
    if path.suffix.lower() in (".tif", ".tiff"):
        with rasterio.open(path) as ds:
            for r0 in range(0, ds.height, rows):
                yield r0, ds.read(window=Window(0, r0, ds.width, min(rows, ds.height - r0)))
    else:
        data = zarr.open_array(str(path / "data"), mode="r")
        for r0 in range(0, data.shape[1], rows):
            yield r0, np.asarray(data[:, r0 : r0 + rows])


def _pca_paths(features: Path) -> tuple[Path, Path]:
    stem = features.name.split(".")[0]
    return features.with_name(f"{stem}_pca.tif"), features.with_name(f"{stem}_pca.png")


def _pca_pictures(
    features: Path, samples: np.ndarray, crs: Any, transform: Affine, shape: tuple[int, int],
    overwrite: bool,
) -> tuple[Path, Path]:  # fmt: skip
    """RGB picture of the first 3 principal components on the patch grid cut to ``shape``."""
    mean, comps, limits = fit_pca(samples)
    tif, png = _pca_paths(features)
    layout = BandLayout(
        "uint8", 0, ["pca1", "pca2", "pca3"], [], [], resampling="average",
        colorinterp=["Red", "Green", "Blue"],
    )  # fmt: skip
    rows = 256
    height, width = shape
    writer = StripWriter(
        tif, crs=crs, transform=transform, width=width, height=height, strip_rows=rows,
        layout=layout, params={"pca": features.name}, overwrite=overwrite,
    )  # fmt: skip
    span = np.maximum(limits[1] - limits[0], 1e-12)
    try:
        for r0, full in _read_strips(features, rows):
            if r0 >= height:
                break
            block = full[:, : height - r0, :width]
            d, h, w = block.shape
            flat = block.reshape(d, -1).T
            valid = ~np.isnan(flat).any(axis=1)
            rgb = np.zeros((flat.shape[0], 3), dtype=np.uint8)
            if valid.any():
                proj = (flat[valid] - mean) @ comps.T
                rgb[valid] = (1 + np.clip((proj - limits[0]) / span, 0, 1) * 254).astype(np.uint8)
            writer.write(r0 // rows, rgb.T.reshape(3, h, w), {})
        writer.finish()
    except BaseException:
        writer.abort()
        raise
    tmp = png.with_name(f".{png.name}.tmp-{os.getpid()}.png")
    with rasterio.Env(GDAL_PAM_ENABLED="NO"):
        rasterio.shutil.copy(tif, tmp, driver="PNG", WORLDFILE="YES")
    tmp_wld = tmp.with_suffix(".wld")
    if tmp_wld.exists():
        os.replace(tmp_wld, png.with_suffix(".wld"))
        png.with_suffix(".prj").write_text(crs.to_wkt(version="WKT1_ESRI"))
    os.replace(tmp, png)
    return tif, png


@gdal_cache()
def embed_raster(
    backbone: str | Path | tuple[Any, Any],
    src: str | Path,
    dst: str | Path,
    *,
    layer: int = -1,
    tile: int = 512,
    overlap: int = 64,
    batch_size: int = 8,
    device: str = "cpu",
    workers: int = 2,
    pca: bool = True,
    overwrite: bool = False,
    progress: bool = True,
) -> EmbedResult:
    """Write dense patch features of a raster (zarr or GeoTIFF) and a PCA-to-RGB picture.

    Args:
        backbone: a backbone file (``save_backbone`` output / checkpoint) or a loaded
            ``(Backbone, WeightCard)`` pair.
        src: the raster (file, VRT or zarr store).
        dst: ``*.zarr`` store or ``*.tif`` output.
        layer: backbone block whose (normalised) patch tokens are written (negative from the end).
        tile: window side in input pixels (a multiple of the patch size).
        overlap: window overlap in input pixels (a multiple of the patch size).
        batch_size: windows per model call.
        device: torch device.
        workers: background reader threads.
        pca: also write ``<stem>_pca.tif`` and ``<stem>_pca.png``.
        overwrite: replace existing outputs.
        progress: show a progress bar and a summary.

    Returns:
        An :class:`EmbedResult`.
    """
    t0 = time.perf_counter()
    if isinstance(backbone, str | Path):
        from dinogeo.models.backbone_file import load_backbone

        net, card = load_backbone(backbone)
    else:
        net, card = backbone
    net = net.to(device).eval()
    p = int(card.patch_size)
    if tile % p or overlap % p or tile <= 0 or not 0 <= overlap < tile:
        raise ConfigError(
            f"tile ({tile}) and overlap ({overlap}) must be multiples of the patch size {p}, "
            "with overlap < tile"
        )
    paths = expand_inputs(src)
    if len(paths) != 1:
        raise ConfigError(f"embed takes one raster, got {len(paths)}: {paths[:3]}")
    source = open_for_card(paths[0], card)
    dst = Path(dst)
    as_tif = dst.suffix.lower() in (".tif", ".tiff")
    for out in (dst, *(_pca_paths(dst) if pca else ())):
        check_output_path(out, overwrite=overwrite)
    rows, cols = -(-source.height // p), -(-source.width // p)
    dim = int(card.embed_dim)
    transform = source.transform @ Affine.scale(p)
    strip_rows = 64
    grid = TileGrid(rows, cols, tile // p, overlap // p, strip_rows)
    spec = StreamSpec(
        channels=dim, bands=dim, dtype="float32", fill=float("nan"), scale=p,
        margin=(overlap // p) // 4, batch_size=batch_size, workers=workers,
    )  # fmt: skip
    dev = torch.device(device)

    def infer(images: tuple[np.ndarray, ...]) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(images[0])).to(dev)
            return net.get_intermediate_layers(x, [layer])[0].float().cpu().numpy()

    def finish(sums: np.ndarray, weights: np.ndarray) -> np.ndarray:
        out = np.full(sums.shape, np.nan, dtype=np.float32)
        ok = weights > 0
        out[:, ok] = sums[:, ok] / weights[ok]
        return out

    names = [f"f{i:04d}" for i in range(dim)]
    meta = {"layer": layer, "patch_size": p, "arch": card.arch, "source": str(paths[0])}
    step = max(1, (rows * cols) // _MAX_SAMPLES)
    samples: list[np.ndarray] = []
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    writer: StripWriter | None = None
    write: Callable[[int, np.ndarray], None]
    if as_tif:
        layout = BandLayout("float32", float("nan"), names, [], [], resampling="average")
        writer = StripWriter(
            dst, crs=source.crs, transform=transform, width=cols, height=rows,
            strip_rows=strip_rows, layout=layout, params=meta, overwrite=overwrite,
        )  # fmt: skip
        w = writer

        def write(strip: int, data: np.ndarray) -> None:
            w.write(strip, data, {})
    else:
        info = GeoInfo(
            crs_wkt=source.crs.to_wkt(), transform=tuple(transform)[:6], width=cols, height=rows,
            count=dim, dtype="float32", band_names=tuple(names), nodata=float("nan"),
            mask="nodata", source=str(paths[0]),
        )  # fmt: skip
        shutil.rmtree(tmp, ignore_errors=True)
        arr = _zarr_create(tmp, info, strip_rows, meta)

        def write(strip: int, data: np.ndarray) -> None:
            r0 = strip * strip_rows
            arr[:, r0 : r0 + data.shape[1]] = data

    total = sum(len(b) for b in grid.batches(0, grid.n_strips, batch_size))
    try:
        with tqdm(total=total, unit="tile", disable=not progress, desc="embed") as bar:
            for strip, data in stream_strips(
                grid, (0, grid.n_strips), lambda: window_reader([source]), infer, finish, spec,
                on_batch=bar.update,
            ):  # fmt: skip
                flat = data.reshape(dim, -1)[:, ::step].T
                samples.append(flat[~np.isnan(flat).any(axis=1)])
                write(strip, data)
        if writer is not None:
            writer.finish()
        else:
            if dst.exists():
                shutil.rmtree(dst) if dst.is_dir() else dst.unlink()
            os.replace(tmp, dst)
    except BaseException:
        if writer is not None:
            writer.abort()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    pca_tif = pca_png = None
    if pca:
        # whole patches only, so the picture never reaches past the source (at least one patch)
        inside = (max(1, source.height // p), max(1, source.width // p))
        pca_tif, pca_png = _pca_pictures(
            dst, np.concatenate(samples), source.crs, transform, inside, overwrite
        )
    result = EmbedResult(dst, pca_tif, pca_png, (dim, rows, cols), time.perf_counter() - t0)
    if progress:
        print(
            f"dinogeo embed: {dim} x {rows} x {cols} features in {result.seconds:.1f} s -> {dst}"
            + (f"\n  PCA picture: {pca_tif}, {pca_png}" if pca else ""),
            file=sys.stderr,
        )
    return result
