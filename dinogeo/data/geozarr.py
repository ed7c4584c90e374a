"""Georeferencing attributes of dinogeo zarr stores, following the GeoZarr / CF conventions.

A store written by :func:`dinogeo.data.ingest.ingest` holds one group per raster::

    store.zarr/                 root attrs {"dinogeo": {"format": 1, "complete": bool, "rasters": [...]}}
      <name>/                   group attrs {"dinogeo": GeoInfo as JSON, "_dinogeo_done": bool}
        data        (band, y, x)  native dtype; attrs grid_mapping="spatial_ref", _ARRAY_DIMENSIONS
        valid       (y, x) uint8  only when validity came from an alpha band or an internal mask
        valid_coarse (y', x') uint8  decimated valid mask (longest side 256) for chip samplers
        spatial_ref ()            CF grid mapping: crs_wkt, spatial_ref, GeoTransform (GDAL order)
        x, y                      pixel-centre coordinates (so xarray/rioxarray open the group)
        _blocks     (rows, cols)  int64 per-block CRC32 of what was written, -1 = not written yet

:func:`encode_geoinfo` / :func:`decode_geoinfo` translate between :class:`GeoInfo` and these
attributes. Stores written by other tools are accepted when their data array names a CF grid
mapping variable carrying ``crs_wkt`` (or ``spatial_ref``) and a GDAL ``GeoTransform``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from affine import Affine
from pyproj import CRS as ProjCRS
from pyproj.exceptions import CRSError as ProjCRSError
from rasterio.crs import CRS
from rasterio.errors import CRSError
from zarr.codecs import BloscCodec

from dinogeo.errors import RasterReadError

__all__ = [
    "COARSE_SIZE",
    "FORMAT_VERSION",
    "GeoInfo",
    "create_raster_group",
    "decode_geoinfo",
    "encode_geoinfo",
    "spatial_ref_attrs",
]

#: version of the dinogeo store layout written by ``ingest``
FORMAT_VERSION = 1
#: longest side of the ``valid_coarse`` mask stored per raster (the samplers' default)
COARSE_SIZE = 256

_FIX = (
    "re-create it with `dinogeo ingest`, or write the georeferencing into the store: a 'spatial_ref' "
    "variable with 'crs_wkt' and 'GeoTransform' attributes named by the data array's 'grid_mapping' "
    "(rioxarray: da.rio.write_crs(crs).rio.write_transform(transform) before to_zarr)"
)


@dataclass(frozen=True)
class GeoInfo:
    """Georeferencing and band metadata of one raster in a zarr store.

    Attributes:
        crs_wkt: the CRS as WKT.
        transform: the six affine coefficients ``(a, b, c, d, e, f)`` (rasterio order).
        width: columns.
        height: rows.
        count: bands.
        dtype: numpy dtype name of the data.
        band_names: one name per band.
        nodata: the nodata value, or None.
        mask: how validity is known: ``"none"`` (every pixel valid, NaN aside), ``"nodata"`` (a pixel
            is invalid where all bands equal nodata, GDAL's rule), ``"alpha"`` or ``"internal"`` (the
            source's alpha band or internal mask, stored in the ``valid`` array).
        sensor: the sensor spec name recorded at ingest, or None.
        source: the path of the raster the data came from, or None.
        footprint_wkt: the valid-data footprint in EPSG:4326 (lon/lat) as WKT, or None.
        valid_fraction: the fraction of valid pixels, or None when unknown.
    """

    crs_wkt: str
    transform: tuple[float, float, float, float, float, float]
    width: int
    height: int
    count: int
    dtype: str
    band_names: tuple[str, ...]
    nodata: float | None = None
    mask: str = "none"
    sensor: str | None = None
    source: str | None = None
    footprint_wkt: str | None = None
    valid_fraction: float | None = None

    @property
    def crs(self) -> CRS:
        """The CRS as a rasterio object."""
        return CRS.from_wkt(self.crs_wkt)

    @property
    def affine(self) -> Affine:
        """The affine transform from pixel to CRS coordinates."""
        return Affine(*self.transform)


def _json_float(value: float | None) -> float | str | None:
    if value is None:
        return None
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return float(value)


def _parse_float(value: Any) -> float | None:
    if value is None:
        return None
    return float(value)


def encode_geoinfo(info: GeoInfo) -> dict[str, Any]:
    """Return the JSON-safe ``dinogeo`` group attribute for ``info`` (NaN nodata becomes "nan")."""
    data = asdict(info)
    data["transform"] = [float(v) for v in info.transform]
    data["band_names"] = list(info.band_names)
    data["nodata"] = _json_float(info.nodata)
    data["crs"] = _crs_label(info.crs_wkt)
    json.dumps(data)  # fail here, not inside zarr, if something is not JSON-serialisable
    return data


def _crs_label(wkt: str) -> str:
    try:
        crs = CRS.from_wkt(wkt)
    except CRSError:
        return wkt
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_wkt()


def spatial_ref_attrs(crs_wkt: str, transform: tuple[float, ...]) -> dict[str, Any]:
    """Return the CF grid-mapping attributes of the ``spatial_ref`` variable.

    Includes ``crs_wkt`` and ``spatial_ref`` (the WKT, as GDAL and rioxarray expect), the CF grid
    mapping parameters when pyproj can derive them, and ``GeoTransform`` in GDAL order
    (``c a b f d e``).
    """
    a, b, c, d, e, f = (float(v) for v in transform[:6])
    attrs: dict[str, Any] = {}
    try:
        cf = ProjCRS.from_wkt(crs_wkt).to_cf()
    except (ProjCRSError, ValueError, TypeError):
        cf = {}  # the CF parameters are optional; crs_wkt below is what readers use
    attrs.update({k: v for k, v in cf.items() if _is_json_value(v)})
    attrs["crs_wkt"] = crs_wkt
    attrs["spatial_ref"] = crs_wkt
    attrs["GeoTransform"] = " ".join(repr(v) for v in (c, a, b, f, d, e))
    return attrs


def _is_json_value(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


def decode_geoinfo(
    group_attrs: Mapping[str, Any],
    *,
    shape: tuple[int, ...],
    dtype: str,
    data_attrs: Mapping[str, Any] | None = None,
    grid_mapping_attrs: Mapping[str, Any] | None = None,
    where: str = "<store>",
) -> GeoInfo:
    """Rebuild :class:`GeoInfo` from the attributes of a raster group.

    Args:
        group_attrs: the group's attributes (a ``dinogeo`` entry when written by ingest).
        shape: the data array's shape ``(bands, height, width)``.
        dtype: the data array's dtype name.
        data_attrs: the data array's attributes (used for stores written by other tools).
        grid_mapping_attrs: attributes of the variable named by the data array's ``grid_mapping``.
        where: the store and group, for error messages.

    Raises:
        RasterReadError: if the group carries no CRS or no transform, naming ``where`` and the fix.
    """
    if len(shape) != 3:
        raise RasterReadError(
            f"{where}: the data array has shape {shape}, expected (band, y, x); {_FIX}"
        )
    count, height, width = (int(v) for v in shape)
    meta = group_attrs.get("dinogeo")
    if isinstance(meta, Mapping) and "crs_wkt" in meta and "transform" in meta:
        try:
            crs_wkt = str(meta["crs_wkt"])
            CRS.from_wkt(crs_wkt)
            transform = tuple(float(v) for v in meta["transform"])[:6]
        except (CRSError, TypeError, ValueError) as err:
            raise RasterReadError(
                f"{where}: invalid georeferencing attributes ({err}); {_FIX}"
            ) from err
        names = tuple(str(n) for n in meta.get("band_names") or ())
        return GeoInfo(
            crs_wkt=crs_wkt,
            transform=transform,  # type: ignore[arg-type]
            width=width,
            height=height,
            count=count,
            dtype=dtype,
            band_names=names if len(names) == count else _default_names(count),
            nodata=_parse_float(meta.get("nodata")),
            mask=str(meta.get("mask", "none")),
            sensor=meta.get("sensor"),
            source=meta.get("source"),
            footprint_wkt=meta.get("footprint_wkt"),
            valid_fraction=_parse_float(meta.get("valid_fraction")),
        )
    return _decode_cf(
        data_attrs or {}, grid_mapping_attrs or {}, count, height, width, dtype, where
    )


def _decode_cf(
    data_attrs: Mapping[str, Any],
    gm: Mapping[str, Any],
    count: int,
    height: int,
    width: int,
    dtype: str,
    where: str,
) -> GeoInfo:
    wkt = gm.get("crs_wkt") or gm.get("spatial_ref")
    geo_transform = gm.get("GeoTransform")
    if not wkt or not geo_transform:
        missing = [n for n, v in (("crs_wkt", wkt), ("GeoTransform", geo_transform)) if not v]
        raise RasterReadError(
            f"{where}: zarr store without georeferencing (no {' / '.join(missing)} found); {_FIX}"
        )
    try:
        crs = CRS.from_wkt(str(wkt))
        c, a, b, f, d, e = (float(v) for v in str(geo_transform).split())
    except (CRSError, ValueError) as err:
        raise RasterReadError(
            f"{where}: invalid georeferencing attributes ({err}); {_FIX}"
        ) from err
    nodata = data_attrs.get("_FillValue", data_attrs.get("nodata"))
    names = data_attrs.get("band_names") or data_attrs.get("long_name")
    band_names = (
        tuple(str(n) for n in names)
        if isinstance(names, list | tuple) and len(names) == count
        else _default_names(count)
    )
    return GeoInfo(
        crs_wkt=crs.to_wkt(),
        transform=(a, b, c, d, e, f),
        width=width,
        height=height,
        count=count,
        dtype=dtype,
        band_names=band_names,
        nodata=_parse_float(nodata),
        mask="nodata" if nodata is not None else "none",
    )


def create_raster_group(root: Any, name: str, info: GeoInfo, chunk: int) -> Any:
    """Create (replacing) the group of one raster with empty arrays and georeferencing.

    Writes the ``data`` array (band, y, x) in ``info.dtype`` with chunks ``(bands, chunk, chunk)``
    and Blosc LZ4 + shuffle, a ``valid`` uint8 array for alpha/internal masks, the CF
    ``spatial_ref`` variable, ``x``/``y`` pixel-centre coordinates (north-up grids only) and the
    ``dinogeo`` group attributes. Returns the zarr group.
    """
    g = root.create_group(name, overwrite=True)
    g.attrs.update({"dinogeo": encode_geoinfo(info), "_dinogeo_done": False})
    dtype = np.dtype(info.dtype)
    fill: Any = info.nodata if info.nodata is not None else 0
    if (
        dtype.kind != "f"
        and fill is not None
        and (np.isnan(fill) or not np.can_cast(np.min_scalar_type(fill), dtype))
    ):
        fill = 0
    codec = BloscCodec(
        cname="lz4", clevel=5, shuffle="shuffle" if dtype.itemsize > 1 else "bitshuffle"
    )
    g.create_array(
        "data",
        shape=(info.count, info.height, info.width),
        dtype=dtype,
        chunks=(info.count, chunk, chunk),
        compressors=codec,
        fill_value=dtype.type(fill),
        dimension_names=("band", "y", "x"),
        attributes={
            "_ARRAY_DIMENSIONS": ["band", "y", "x"],
            "grid_mapping": "spatial_ref",
            "band_names": list(info.band_names),
            **({"_FillValue": encode_geoinfo(info)["nodata"]} if info.nodata is not None else {}),
        },
    )
    if info.mask in ("alpha", "internal"):
        g.create_array(
            "valid",
            shape=(info.height, info.width),
            dtype="uint8",
            chunks=(chunk, chunk),
            compressors=BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle"),
            fill_value=0,
            dimension_names=("y", "x"),
            attributes={"_ARRAY_DIMENSIONS": ["y", "x"], "flag_values": [0, 1]},
        )
    dec = max(1, -(-max(info.width, info.height) // COARSE_SIZE))
    coarse = (max(1, -(-info.height // dec)), max(1, -(-info.width // dec)))
    g.create_array(
        "valid_coarse",
        shape=coarse,
        dtype="uint8",
        chunks=coarse,
        compressors=BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle"),
        fill_value=0,
        dimension_names=("y_coarse", "x_coarse"),
        attributes={"max_size": COARSE_SIZE, "decimation": dec},
    )
    sr = g.create_array("spatial_ref", shape=(), dtype="int32", fill_value=0)
    sr.attrs.update(spatial_ref_attrs(info.crs_wkt, info.transform))
    a, b, c, d, e, f = info.transform
    if b == 0 and d == 0:  # 1-D coordinates describe north-up grids only
        for dim, n, start, step in (("x", info.width, c, a), ("y", info.height, f, e)):
            coord = g.create_array(
                dim,
                shape=(n,),
                dtype="float64",
                chunks=(max(n, 1),),
                dimension_names=(dim,),
                attributes={"_ARRAY_DIMENSIONS": [dim]},
            )
            coord[:] = start + step * (np.arange(n) + 0.5)
    return g


def _default_names(count: int) -> tuple[str, ...]:
    return tuple(f"band_{i + 1}" for i in range(count))
