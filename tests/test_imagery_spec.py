"""The run records shared by data and model: ImagerySpec and ChipSplit."""

import dataclasses
import json

import pytest

from dinogeo.data.archive import scan_archive
from dinogeo.data.imagery_spec import ImagerySpec
from dinogeo.errors import ConfigError
from dinogeo.labels.split import ChipSplit
from dinogeo.trainers.base import resolve_backbone


def test_imagery_spec_is_one_immutable_json_ready_record():
    spec = ImagerySpec("vit_test_patch16_dinov3", "sentinel2_l2a", ["B02", "B03"], 1e-3, 0.0)
    assert spec == ImagerySpec(
        "vit_test_patch16_dinov3", "sentinel2_l2a", ("B02", "B03"), 1e-3, 0.0
    )
    assert spec.bands == ("B02", "B03") and spec.band_list == ["B02", "B03"]
    assert json.loads(json.dumps(spec.to_dict())) == {
        "backbone": "vit_test_patch16_dinov3",
        "sensor": "sentinel2_l2a",
        "bands": ["B02", "B03"],
        "scale": 1e-3,
        "offset": 0.0,
    }
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.sensor = "rgb_uint8"  # type: ignore[misc]
    assert ImagerySpec().band_list is None


def test_a_spec_without_a_backbone_cannot_build_one():
    with pytest.raises(ConfigError, match="set data.init_args.backbone"):
        resolve_backbone(ImagerySpec(sensor="rgb_uint8"))
    _, card = resolve_backbone(ImagerySpec("vit_test_patch16_dinov3", "rgb_uint8"))
    assert card.sensor == "rgb_uint8"


def test_chip_split_refuses_a_selection_share_outside_zero_one():
    assert ChipSplit(select_fraction=0.5).select_fraction == 0.5
    for bad in (1.0, -0.1):
        with pytest.raises(ConfigError, match="select_fraction must be in"):
            ChipSplit(select_fraction=bad)


def test_scale_and_offset_overrides_reach_the_archive_sensor(shared_data):
    """scan_archive's flat scale/offset become an ImagerySpec applied to the run's sensor."""
    image = (
        shared_data / "sentinel2-landcover-aberystwyth-rsgislib/sen2_20210527_aber_10band_crop.tif"
    )
    bands = ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"]
    base = scan_archive([image], sensor="sentinel2_l2a", bands=bands).sensor
    over = scan_archive([image], sensor="sentinel2_l2a", bands=bands, scale=1e-3, offset=0.5)
    assert (over.sensor.scale, over.sensor.offset) == (1e-3, 0.5) != (base.scale, base.offset)
    assert over.sensor == ImagerySpec(scale=1e-3, offset=0.5).calibrated(base)
    only_offset = ImagerySpec(offset=0.5).calibrated(base)
    assert (only_offset.scale, only_offset.offset) == (base.scale, 0.5)
    assert ImagerySpec().calibrated(base) == base
