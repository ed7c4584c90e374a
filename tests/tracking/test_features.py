"""Frozen backbone features as the channels of the change statistic (plumbing on real data)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dinogeo.data.sensors import load_sensor
from dinogeo.errors import BandMismatchError
from dinogeo.models import create_backbone
from dinogeo.models.backbone_file import save_backbone
from dinogeo.models.card import WeightCard
from dinogeo.tracking import track_series
from dinogeo.tracking.features import FeatureExtractor


def _backbone(tmp_path, sensor_name, bands, patch=4):
    torch.manual_seed(0)
    spec = load_sensor(sensor_name).select(bands)
    net = create_backbone(
        "vit_test_patch16_dinov3", in_chans=len(bands), img_size=32, patch_size=patch
    )
    card = WeightCard(
        arch="vit_test_patch16_dinov3", patch_size=patch, embed_dim=net.embed_dim, band_names=list(bands),
        sensor=sensor_name, mean=[b.mean for b in spec.bands], std=[b.std for b in spec.bands],
    )  # fmt: skip
    path = tmp_path / f"{sensor_name}.safetensors"
    save_backbone(path, net, card)
    return path


def test_features_per_date(tmp_path, myanmar):
    from rasterio.windows import Window

    from dinogeo.tracking import open_series

    series = open_series(myanmar["stack"], dates_csv=myanmar["dates"])
    fx = FeatureExtractor(
        _backbone(tmp_path, "sentinel1_grd_db", ["VV", "VH"]), series.sensor, dims=8
    )
    x = series.read(Window(-1, -1, 30, 26))  # not a multiple of the patch; a halo outside
    idx = fx(x[:6])
    assert idx.values.shape == (6, 8, 26, 30) and idx.mode == "magnitude"
    assert np.isnan(idx.values[:, :, 0, :]).all()  # the halo stays invalid
    inside = idx.values[:, :, 1:, 1:]
    assert np.isfinite(inside).all() and inside.std() > 0
    again = FeatureExtractor(
        _backbone(tmp_path, "sentinel1_grd_db", ["VV", "VH"]), series.sensor, dims=8
    )(x[:6])
    np.testing.assert_array_equal(idx.values, again.values)  # fixed projection: same every run


def test_track_with_backbone_features(tmp_path, myanmar):
    path = _backbone(tmp_path, "sentinel1_grd_db", ["VV", "VH"])
    r = track_series(
        myanmar["stack"], tmp_path / "out", dates_csv=myanmar["dates"], monitor_start="2016-01-01",
        reference=myanmar["points"], backbone=path, baselines=["none"], progress=False,
    )  # fmt: skip
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert set(m["methods"]) >= {"dinogeo (cross-validated)"} and r.threshold > 0
    assert (tmp_path / "out" / "loss_date.tif").is_file()


def test_backbone_of_another_sensor_without_common_bands(tmp_path, myanmar):
    path = _backbone(tmp_path, "sentinel2_l2a", ["B04", "B03", "B02"])
    with pytest.raises(BandMismatchError):
        track_series(
            myanmar["stack"], tmp_path / "out", dates_csv=myanmar["dates"], monitor_start="2016-01-01",
            backbone=path, progress=False,
        )  # fmt: skip
    assert not (tmp_path / "out").exists()
