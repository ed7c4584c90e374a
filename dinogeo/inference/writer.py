"""Piece-by-piece output in a resumable sidecar folder, then one COG renamed into place.

While a prediction runs, every finished piece (a 2-D block of prediction, a strip of rows of an
embedding) is written as its own small tiled GeoTIFF inside ``<dst>.dinogeo-partial/`` (written to
a temporary name and renamed, so a piece file is either complete or absent), and ``state.json``
there records the finished pieces with their statistics and a hash of the run's parameters. When
all pieces exist, a VRT over them is copied with GDAL's COG driver (tiled 512, compressed,
overviews) to a hidden temporary file in the destination folder that is renamed onto ``dst``. An
interrupted run therefore leaves no partial ``dst``; rerunning with ``resume=True`` keeps the
finished pieces when the parameter hash matches.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.crs import CRS
from rasterio.env import get_gdal_config, set_gdal_config
from rasterio.errors import RasterioError

from dinogeo.errors import ConfigError, OutputExistsError, RasterReadError

__all__ = [
    "GDAL_CACHE_BYTES",
    "PARTIAL_SUFFIX",
    "BandLayout",
    "BlockWriter",
    "StripWriter",
    "check_output_path",
    "gdal_cache",
    "partial_dir",
    "write_vrt",
]

PARTIAL_SUFFIX = ".dinogeo-partial"
STATE_VERSION = 1
#: GDAL block cache (bytes) while predicting: keeps memory flat whatever the raster size
GDAL_CACHE_BYTES = 64 << 20
_GDAL_TYPES = {
    "uint8": "Byte",
    "uint16": "UInt16",
    "int16": "Int16",
    "uint32": "UInt32",
    "int32": "Int32",
    "float32": "Float32",
    "float64": "Float64",
}


@dataclass
class BandLayout:
    """Dtype, nodata and per-band metadata of an output raster.

    Attributes:
        dtype: numpy dtype of every band.
        nodata: nodata value (NaN allowed for floats), or None.
        descriptions: one description per band.
        scales: GDAL scale per band (or empty).
        offsets: GDAL offset per band (or empty).
        colormap: ``{value: (r, g, b, a)}`` palette of band 1, or None.
        categories: ``{value: name}`` category names of band 1, or None.
        resampling: overview resampling (``"nearest"``, ``"mode"``, ``"average"``).
        colorinterp: GDAL colour interpretation per band (``"Red"``, ``"Green"``, ``"Blue"``...),
            or None (undefined; a palette makes band 1 ``"Palette"``).
    """

    dtype: str
    nodata: float | None
    descriptions: list[str]
    scales: list[float]
    offsets: list[float]
    colormap: dict[int, tuple[int, int, int, int]] | None = None
    categories: dict[int, str] | None = None
    resampling: str = "nearest"
    colorinterp: list[str] | None = None

    @property
    def count(self) -> int:
        """Number of bands."""
        return len(self.descriptions)


@contextmanager
def gdal_cache(nbytes: int = GDAL_CACHE_BYTES) -> Iterator[None]:
    """Cap GDAL's block cache (process-wide) for the duration of the block; restore it after.

    GDAL caches raster blocks up to 5 % of the RAM by default, so reading or writing a large raster
    would grow the process memory with the raster size.
    """
    previous = get_gdal_config("GDAL_CACHEMAX")
    set_gdal_config("GDAL_CACHEMAX", int(nbytes))
    try:
        yield
    finally:
        if previous:
            set_gdal_config("GDAL_CACHEMAX", int(previous))


def partial_dir(dst: Path) -> Path:
    """Return the sidecar folder that holds the resumable state of ``dst``."""
    return dst.with_name(dst.name + PARTIAL_SUFFIX)


def check_output_path(dst: Path, *, overwrite: bool) -> None:
    """Fail early when ``dst`` cannot be written.

    Args:
        dst: output path.
        overwrite: whether an existing ``dst`` may be replaced.

    Raises:
        OutputExistsError: ``dst`` exists and ``overwrite`` is False.
        RasterReadError: the destination folder is missing or not writable.
    """
    if dst.exists() and not overwrite:
        raise OutputExistsError(
            f"{dst} already exists: pass overwrite=True (--overwrite) to replace it, or choose "
            "another output path"
        )
    folder = dst.parent
    if not folder.is_dir():
        raise RasterReadError(
            f"output folder {folder} does not exist: create it first (mkdir -p {folder})"
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise RasterReadError(
            f"output folder {folder} is not writable: choose another output path or fix its "
            "permissions"
        )


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _fmt(value: float | None) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def write_vrt(
    path: Path,
    sources: Sequence[Path],
    layout: BandLayout,
    *,
    crs: CRS | None = None,
) -> Path:
    """Write a VRT mosaic of rasters that share a CRS and a pixel size.

    Sources are placed by their geotransforms; later sources only fill pixels that earlier ones
    left as nodata. Paths are stored relative to the VRT when they share its folder tree.

    Args:
        path: the VRT to write.
        sources: rasters to mosaic (same CRS, pixel size and band count).
        layout: band metadata (dtype, nodata, descriptions, palette, category names).
        crs: CRS to check the sources against (the first source's when None).

    Returns:
        ``path``.

    Raises:
        ConfigError: the sources differ in CRS or pixel size.
    """
    infos = []
    for src in sources:
        with rasterio.open(src) as ds:
            infos.append((Path(src), ds.crs, ds.transform, ds.width, ds.height))
    ref_crs = crs or infos[0][1]
    t0 = infos[0][2]
    for p, c, t, _, _ in infos:
        if c != ref_crs or not (math.isclose(t.a, t0.a) and math.isclose(t.e, t0.e)):
            raise ConfigError(
                f"cannot mosaic {p}: its CRS/pixel size ({c}, {t.a}x{t.e}) differs from "
                f"{infos[0][0]} ({ref_crs}, {t0.a}x{t0.e}); reproject the inputs to one grid"
            )
    west = min(t.c for _, _, t, _, _ in infos)
    north = max(t.f for _, _, t, _, _ in infos)
    east = max(t.c + w * t.a for _, _, t, w, _ in infos)
    south = min(t.f + h * t.e for _, _, t, _, h in infos)
    width = int(round((east - west) / t0.a))
    height = int(round((south - north) / t0.e))
    root = ET.Element("VRTDataset", rasterXSize=str(width), rasterYSize=str(height))
    srs = ET.SubElement(root, "SRS", dataAxisToSRSAxisMapping="1,2")
    srs.text = ref_crs.to_wkt()
    gt = ET.SubElement(root, "GeoTransform")
    gt.text = ", ".join(repr(v) for v in (west, t0.a, 0.0, north, 0.0, t0.e))
    for b in range(layout.count):
        band = ET.SubElement(
            root, "VRTRasterBand", dataType=_GDAL_TYPES[layout.dtype], band=str(b + 1)
        )
        ET.SubElement(band, "Description").text = layout.descriptions[b]
        if layout.nodata is not None:
            ET.SubElement(band, "NoDataValue").text = _fmt(layout.nodata)
        if layout.scales:
            ET.SubElement(band, "Offset").text = repr(layout.offsets[b])
            ET.SubElement(band, "Scale").text = repr(layout.scales[b])
        if b == 0 and layout.categories:
            cats = ET.SubElement(band, "CategoryNames")
            for v in range(max(layout.categories) + 1):
                ET.SubElement(cats, "Category").text = layout.categories.get(v, "")
        if layout.colorinterp and not (b == 0 and layout.colormap):
            ET.SubElement(band, "ColorInterp").text = layout.colorinterp[b]
        if b == 0 and layout.colormap:
            ET.SubElement(band, "ColorInterp").text = "Palette"
            table = ET.SubElement(band, "ColorTable")
            for v in range(max(layout.colormap) + 1):
                r, g, bl, a = layout.colormap.get(v, (0, 0, 0, 0))
                ET.SubElement(table, "Entry", c1=str(r), c2=str(g), c3=str(bl), c4=str(a))
        for p, _, t, w, h in infos:
            kind = "ComplexSource" if layout.nodata is not None else "SimpleSource"
            s = ET.SubElement(band, kind)
            try:
                rel = os.path.relpath(p.resolve(), path.parent.resolve())
                name, relative = rel, "1"
            except ValueError:
                name, relative = str(p.resolve()), "0"
            if name.startswith(".."):
                name, relative = str(p.resolve()), "0"
            ET.SubElement(s, "SourceFilename", relativeToVRT=relative).text = name
            ET.SubElement(s, "SourceBand").text = str(b + 1)
            ET.SubElement(s, "SrcRect", xOff="0", yOff="0", xSize=str(w), ySize=str(h))
            xo = int(round((t.c - west) / t0.a))
            yo = int(round((t.f - north) / t0.e))
            ET.SubElement(s, "DstRect", xOff=str(xo), yOff=str(yo), xSize=str(w), ySize=str(h))
            if kind == "ComplexSource":
                ET.SubElement(s, "NODATA").text = _fmt(layout.nodata)
    ET.indent(root)
    _atomic_write_text(path, ET.tostring(root, encoding="unicode") + "\n")
    return path


class BlockWriter:
    """Writes rectangular pieces of one output raster resumably and publishes the finished COG.

    Args:
        dst: the final output file (a COG).
        crs: output CRS.
        transform: output geotransform.
        width: output columns.
        height: output rows.
        pieces: ``(row_off, col_off, rows, cols)`` of every piece (blocks or strips); together
            they tile the raster.
        layout: band metadata.
        params: what determines the output (model hash, inputs, tiling...), used to refuse to
            resume a different run.
        overwrite: replace an existing ``dst``.
        resume: keep finished pieces of an interrupted run with the same ``params``.
    """

    def __init__(
        self,
        dst: Path,
        *,
        crs: CRS,
        transform: Affine,
        width: int,
        height: int,
        pieces: list[tuple[int, int, int, int]],
        layout: BandLayout,
        params: dict[str, Any],
        overwrite: bool = False,
        resume: bool = False,
    ) -> None:
        self.dst = Path(dst)
        self.crs, self.transform = crs, transform
        self.width, self.height = width, height
        self.pieces = list(pieces)
        self.layout = layout
        self.n_pieces = len(self.pieces)
        self.params = params
        self.params_hash = _hash(params)
        self.dir = partial_dir(self.dst)
        self.state_path = self.dir / "state.json"
        self.done: dict[int, dict[str, Any]] = {}
        self._tmp: Path | None = None
        check_output_path(self.dst, overwrite=overwrite)
        self._open_state(resume)

    def _open_state(self, resume: bool) -> None:
        if self.dir.exists() and resume and self.state_path.is_file():
            try:
                state = json.loads(self.state_path.read_text())
            except json.JSONDecodeError:
                state = {}
            if state.get("params_hash") != self.params_hash:
                old = state.get("params", {})
                diff = sorted(
                    k for k in set(old) | set(self.params) if old.get(k) != self.params.get(k)
                )
                raise ConfigError(
                    f"cannot resume {self.dst}: the interrupted run in {self.dir} used different "
                    f"parameters (differences: {diff or 'unknown'}); rerun with the same model "
                    f"and options, or without resume (the partial state is then discarded)"
                )
            for key, stats in state.get("done", {}).items():
                if self._piece_path(int(key)).is_file():
                    self.done[int(key)] = stats
            return
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir()
        self._save_state()

    def _save_state(self) -> None:
        state = {
            "format": STATE_VERSION,
            "dst": str(self.dst),
            "params_hash": self.params_hash,
            "params": self.params,
            "n_pieces": self.n_pieces,
            "done": {str(k): v for k, v in sorted(self.done.items())},
        }
        _atomic_write_text(self.state_path, json.dumps(state, indent=1, default=str))

    def _piece_path(self, index: int) -> Path:
        return self.dir / f"piece_{index:06d}.tif"

    @property
    def todo(self) -> list[int]:
        """Pieces not written yet."""
        return [s for s in range(self.n_pieces) if s not in self.done]

    def write(self, index: int, data: np.ndarray, stats: dict[str, Any]) -> None:
        """Write one finished piece and record it.

        Args:
            index: piece index.
            data: ``(bands, rows, cols)`` of the piece in the layout's dtype.
            stats: JSON-ready statistics of the piece (kept for the summary and sidecars).

        Raises:
            ConfigError: the array does not have the piece's shape.
        """
        r0, c0, rows, cols = self.pieces[index]
        if data.shape[1:] != (rows, cols):
            raise ConfigError(
                f"{self.dst}: piece {index} is {rows} x {cols} pixels, got an array of shape "
                f"{data.shape}"
            )
        path = self._piece_path(index)
        tmp = path.with_name(f".{path.name}.tmp")
        profile = {
            "driver": "GTiff",
            "width": cols,
            "height": rows,
            "count": self.layout.count,
            "dtype": self.layout.dtype,
            "nodata": self.layout.nodata,
            "crs": self.crs,
            "transform": self.transform @ Affine.translation(c0, r0),
            "tiled": True,
            "blockxsize": 512,
            "blockysize": 512,
            "compress": "zstd",
            "zstd_level": 1,
        }
        with rasterio.open(tmp, "w", **profile) as ds:
            ds.write(data)
        os.replace(tmp, path)
        self.done[index] = stats
        self._save_state()

    def finish(self) -> Path:
        """Turn the pieces into the final COG at ``dst`` (atomic rename) and drop the sidecar.

        Returns:
            ``dst``.

        Raises:
            ConfigError: if pieces are missing.
        """
        if self.todo:
            raise ConfigError(f"{self.dst}: pieces {self.todo[:5]}... are not written yet")
        vrt = write_vrt(
            self.dir / "pieces.vrt",
            [self._piece_path(s) for s in range(self.n_pieces)],
            self.layout,
            crs=self.crs,
        )
        self._tmp = self.dst.with_name(f".{self.dst.name}.tmp-{os.getpid()}.tif")
        is_float = np.dtype(self.layout.dtype).kind == "f"
        options = {
            "driver": "COG",
            "COMPRESS": "DEFLATE",
            "PREDICTOR": "YES" if is_float else "NO",
            "BLOCKSIZE": "512",
            "OVERVIEW_RESAMPLING": self.layout.resampling.upper(),
            "BIGTIFF": "IF_SAFER",
        }
        try:
            with rasterio.Env(GDAL_PAM_ENABLED="NO"):
                rasterio.shutil.copy(vrt, self._tmp, **options)
        except RasterioError as err:
            self._tmp.unlink(missing_ok=True)
            raise RasterReadError(f"writing {self.dst} failed: {err}") from err
        for stale in (Path(str(self.dst) + ".aux.xml"), Path(str(self._tmp) + ".aux.xml")):
            stale.unlink(missing_ok=True)
        os.replace(self._tmp, self.dst)
        self._tmp = None
        shutil.rmtree(self.dir, ignore_errors=True)
        return self.dst

    def abort(self) -> bool:
        """Clean up after a failure.

        The temporary COG is always removed. The sidecar folder is kept when pieces were
        finished (so the run can be resumed), else removed.

        Returns:
            Whether resumable state was kept.
        """
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
        if self.done:
            return True
        shutil.rmtree(self.dir, ignore_errors=True)
        return False


def _hash(params: dict[str, Any]) -> str:
    import hashlib

    text = json.dumps(params, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class StripWriter(BlockWriter):
    """A :class:`BlockWriter` whose pieces are strips of ``strip_rows`` full-width rows."""

    def __init__(
        self,
        dst: Path,
        *,
        crs: CRS,
        transform: Affine,
        width: int,
        height: int,
        strip_rows: int,
        layout: BandLayout,
        params: dict[str, Any],
        overwrite: bool = False,
        resume: bool = False,
    ) -> None:
        pieces = [(r, 0, min(strip_rows, height - r), width) for r in range(0, height, strip_rows)]
        super().__init__(
            dst, crs=crs, transform=transform, width=width, height=height, pieces=pieces,
            layout=layout, params=params, overwrite=overwrite, resume=resume,
        )  # fmt: skip
