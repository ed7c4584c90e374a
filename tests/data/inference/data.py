"""Generators for the inference tests: derived inputs written into tmp_path, and tiny models.

Run as a script to write the fixtures into a folder for a look::

    python tests/data/inference/data.py OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import rasterio
import torch
from torch import nn

from dinogeo._paths import shared_data_dir
from dinogeo.data.sensors import load_sensor
from dinogeo.models.card import WeightCard
from dinogeo.models.task_card import TaskCard, load_task_card

SHARED = shared_data_dir()
RGB_BYTE = "landsat7-rgb-bahamas-rasterio/RGB.byte.tif"
PIX4D = "drone-ortho-pix4d-riotiler/pix4d_alpha_nodata.tif"
KOREA = "aerial-rgb-korea-rasterio/cogeo.tif"
HRO = "aerial-hro-colorado-riotiler/201404_13SED190110_201404_0x1500m_CL_1.tif"
QUEBEC = "landsat8-3band-quebec-riotiler/mosaic_cog1.tif"
QUEBEC2 = "landsat8-3band-quebec-riotiler/mosaic_cog2.tif"
S2_10M = "sentinel2-l1c-virginia-sattestdata/S2_18SVG_20160112_10m_B02-B03-B04-B08_crop.tif"


def write_world_file_png(src: Path, out_dir: Path, *, size: int = 256) -> Path:
    """Write a PNG georeferenced only by a world file (.pgw) and a .prj, cut from a real raster.

    Args:
        src: a real georeferenced RGB raster (uint8, 3 bands).
        out_dir: folder to write into.
        size: side of the crop (top-left corner of ``src``).

    Returns:
        The PNG path (``.pgw`` and ``.prj`` beside it, no ``.aux.xml``).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / f"{src.stem}_worldfile.png"
    with rasterio.open(src) as ds:
        win = rasterio.windows.Window(0, 0, min(size, ds.width), min(size, ds.height))
        data = ds.read([1, 2, 3], window=win)
        t = ds.window_transform(win)
        crs = ds.crs
    profile = {"driver": "PNG", "width": data.shape[2], "height": data.shape[1], "count": 3}
    with rasterio.Env(GDAL_PAM_ENABLED="NO"):
        with rasterio.open(png, "w", dtype="uint8", **profile) as dst:
            dst.write(data)
    for side in (png.with_suffix(".png.aux.xml"), Path(str(png) + ".aux.xml")):
        side.unlink(missing_ok=True)
    # world file: pixel-centre of the upper-left pixel
    lines = [t.a, t.d, t.b, t.e, t.c + t.a / 2 + t.b / 2, t.f + t.d / 2 + t.e / 2]
    png.with_suffix(".pgw").write_text("\n".join(f"{v:.10f}" for v in lines) + "\n")
    png.with_suffix(".prj").write_text(crs.to_wkt(version="WKT1_ESRI"))
    return png


def write_crops(src: Path, out_dir: Path, *, size: int = 256, n: int = 2) -> list[Path]:
    """Write ``n`` side-by-side crops of a real raster (same grid) as GeoTIFFs, for mosaics."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    with rasterio.open(src) as ds:
        profile = ds.profile | {"driver": "GTiff", "width": size, "height": size}
        for i in range(n):
            win = rasterio.windows.Window(i * size, size // 2, size, size)
            path = out_dir / f"{src.stem}_crop{i}.tif"
            prof = profile | {"transform": ds.window_transform(win)}
            prof.pop("blockxsize", None), prof.pop("blockysize", None), prof.pop("tiled", None)
            with rasterio.open(path, "w", **prof) as dst:
                dst.write(ds.read(window=win))
            paths.append(path)
    return paths


def write_no_crs(src: Path, out_dir: Path, *, size: int = 128) -> Path:
    """Write a crop of a real raster with its CRS and geotransform stripped."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{src.stem}_nocrs.tif"
    with rasterio.open(src) as ds:
        data = ds.read(window=rasterio.windows.Window(0, 0, size, size))
    with rasterio.Env(GDAL_PAM_ENABLED="NO"):
        with rasterio.open(path, "w", driver="GTiff", width=size, height=size,
                           count=data.shape[0], dtype=data.dtype) as dst:  # fmt: skip
            dst.write(data)
    return path


def write_corrupt(out_dir: Path) -> Path:
    """Write a truncated GeoTIFF (a real file cut after 2 kB)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "truncated.tif"
    path.write_bytes((SHARED / RGB_BYTE).read_bytes()[:2048])
    return path


def rgb_card(
    sensor: str = "rgb_uint8", bands: tuple[str, ...] = ("red", "green", "blue")
) -> WeightCard:
    """A weight card for ``bands`` of a shipped sensor, with the sensor's statistics."""
    spec = load_sensor(sensor)
    sel = spec.select(list(bands))
    return WeightCard(
        arch="vit_test_patch16_dinov3",
        patch_size=16,
        embed_dim=64,
        band_names=list(bands),
        sensor=sensor,
        mean=[b.mean for b in sel.bands],
        std=[b.std for b in sel.bands],
        scale=spec.scale,
        offset=spec.offset,
    )


class TinyConvModel:
    """A small conv net with the prediction interface (``card``, ``task``, ``predict_batch``).

    Its receptive field is 7 pixels (three 3x3 convolutions), so with a blend margin of at least
    3 pixels tiled prediction equals whole-image prediction up to float rounding.
    """

    def __init__(self, task: TaskCard, card: WeightCard, *, dates: int = 1, seed: int = 0) -> None:
        torch.manual_seed(seed)
        cin = len(card.band_names) * dates
        k = task.num_outputs
        self.card, self.task = card, task
        self.model = nn.Sequential(
            nn.Conv2d(cin, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, k, 3, padding=1),
        ).eval()

    def predict_batch(self, *images: torch.Tensor) -> torch.Tensor:
        x = torch.cat(images, dim=1)
        out = self.model(x)
        if self.task.is_classification:
            return torch.softmax(out * 4.0, dim=1)
        return torch.relu(out[:, :1]) * 20.0


def tiny_model(
    task: str = "land_cover", *, sensor: str = "rgb_uint8", bands=("red", "green", "blue")
) -> TinyConvModel:
    """A TinyConvModel for a shipped task card."""
    card = load_task_card(task)
    return TinyConvModel(
        card, rgb_card(sensor, tuple(bands)), dates=2 if card.kind == "change" else 1
    )


def write_bundle(
    path: Path,
    task: str | TaskCard = "land_cover",
    *,
    arch: str = "vit_test_patch16_dinov3",
    bands=("red", "green", "blue"),
    sensor: str = "rgb_uint8",
    decoder: str = "linear",
    seed: int = 0,
) -> Path:
    """Write a randomly initialised model bundle (backbone + head) with the bundle API."""
    from dinogeo.models.backbone import create_backbone
    from dinogeo.models.bundle import ModelBundle, save_bundle
    from dinogeo.models.heads import HeadConfig, build_model

    torch.manual_seed(seed)
    tcard = load_task_card(task) if isinstance(task, str) else task
    card = rgb_card(sensor, tuple(bands))
    backbone = create_backbone(arch, in_chans=len(bands))
    card.arch, card.embed_dim = arch, backbone.embed_dim
    kind = {"segmentation": "segmentation", "regression": "height", "change": "change"}[tcard.kind]
    head = HeadConfig(type=kind, num_outputs=tcard.num_outputs, decoder=decoder)
    model = build_model(backbone, head)
    save_bundle(path, ModelBundle(card=card, task=tcard, model=model, head=head))
    return path


def distributed_worker(
    rank: int, world: int, init_file: str, src: str, dst: str, opts: dict
) -> None:
    """One rank of a gloo run of ``predict_raster`` with a TinyConvModel (for the sharding test)."""
    import torch.distributed as dist

    from dinogeo.inference import predict_raster

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        predict_raster(tiny_model("land_cover"), src, dst, **opts)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "inference_fixtures")
    print(write_world_file_png(SHARED / RGB_BYTE, out))
    print(write_crops(SHARED / RGB_BYTE, out))
    print(write_no_crs(SHARED / RGB_BYTE, out))
    print(write_corrupt(out))
