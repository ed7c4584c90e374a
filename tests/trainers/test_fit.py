import json

import numpy as np
import pytest
import torch
from rasterio.windows import Window

from dinogeo._paths import resource_dir
from dinogeo.cli.main import main
from dinogeo.models.backbone_file import save_backbone
from dinogeo.models.bundle import load_bundle, save_bundle
from dinogeo.trainers.imagery import ImageReader
from tests.data.labels import data as label_data

ABER = "sentinel2-landcover-aberystwyth-rsgislib"


def test_every_config_is_tested():
    assert {p.stem for p in (resource_dir("configs") / "finetune").glob("*.yaml")} == {
        "land_cover_aberystwyth",
        "land_cover_nc_polygons",
        "canopy_height_swiss",
        "change_synthetic",
        "change_pairs",
    }


@pytest.fixture
def fitted(localised, shared_data, tmp_path, tiny):
    """``dinogeo fit`` of a tiny shipped config with extra options: (loaded bundle, its path)."""

    def run(name, *extra):
        cfg = localised(name, shared_data, tmp_path)
        bundle = tmp_path / f"{name}.safetensors"
        status = main(["fit", "--config", str(cfg), *tiny, "--bundle_path", str(bundle), *extra])
        assert status == 0 and bundle.is_file()
        return load_bundle(bundle), bundle

    return run


@pytest.mark.slow
def test_fit_land_cover_aberystwyth_then_validate(fitted, shared_data, tmp_path, capsys):
    bundle, path = fitted("land_cover_aberystwyth")
    assert bundle.task.name == "land_cover_aberystwyth" and bundle.card.scale == pytest.approx(1e-3)
    assert bundle.card.band_names[0] == "B02" and bundle.head.decoder == "dpt"
    assert bundle.training_config["data"]["train_chips"] > 0
    # the data module's imagery, linked once into the model, is recorded whole in the bundle
    imagery = bundle.training_config["hparams"]["imagery"]
    assert imagery == {
        "backbone": "vit_test_patch16_dinov3",
        "sensor": "sentinel2_l2a",
        "bands": ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"],
        "scale": 1e-3,
        "offset": 0.0,
    }
    reader = ImageReader(shared_data / ABER / "sen2_20210527_aber_10band_crop.tif", bundle.card)
    image, _ = reader.read(Window(10, 20, 48, 40))  # not a multiple of the patch size
    prob = bundle.predict_batch(torch.from_numpy(image)[None])
    assert prob.shape == (1, 4, 40, 48)
    torch.testing.assert_close(prob.sum(1), torch.ones(1, 40, 48))
    # the saved model predicts exactly what the trained one did after a reload
    again = load_bundle(path).predict_batch(torch.from_numpy(image)[None])
    torch.testing.assert_close(prob, again)
    out = tmp_path / "metrics.json"
    status = main(
        [
            "validate",
            "--model",
            str(path),
            "--image",
            str(shared_data / ABER / "sen2_20210527_aber_10band_crop.tif"),
            "--labels",
            str(shared_data / ABER / "sen2_20210527_aber_cls_crop.tif"),
            "--chip-size",
            "256",
            "--json",
            str(out),
        ]
    )
    assert status == 0
    report = json.loads(out.read_text())
    assert report["metrics"]["pixels"] == 512 * 512
    assert 0.0 <= report["metrics"]["miou"] <= 1.0 and "iou/Water" in report["metrics"]
    assert "| miou" in capsys.readouterr().out


@pytest.mark.slow
def test_fit_land_cover_nc_polygons_with_points(fitted):
    bundle, _ = fitted("land_cover_nc_polygons", "--data.init_args.block_size", "64")
    assert bundle.card.band_names == ["B1", "B2", "B3", "B4", "B5", "B7"]
    assert bundle.training_config["data"]["val_chips"] > 0  # chips holding the 1996 points
    assert bundle.predict_batch(torch.zeros(2, 6, 32, 32)).shape == (2, 7, 32, 32)


@pytest.mark.slow
def test_fit_canopy_height_swiss(fitted, tmp_path):
    bundle, path = fitted("canopy_height_swiss", "--model.init_args.bins", "32")
    assert bundle.head.type == "height" and bundle.head.bins == 32
    heights = bundle.predict_batch(torch.randn(1, 3, 32, 32))
    assert heights.shape == (1, 1, 32, 32) and heights.min() >= 0 and heights.max() <= 96
    # a bundle referencing its (frozen) backbone file instead of embedding it
    backbone = tmp_path / "backbone.safetensors"
    save_backbone(backbone, bundle.model.backbone, bundle.card)
    small = tmp_path / "ref.safetensors"
    save_bundle(small, bundle, backbone_path=backbone)
    assert small.stat().st_size < path.stat().st_size
    torch.testing.assert_close(
        load_bundle(small).predict_batch(torch.ones(1, 3, 32, 32)),
        bundle.predict_batch(torch.ones(1, 3, 32, 32)),
    )


@pytest.mark.slow
def test_fit_change_synthetic(fitted):
    extra = [
        "--data.init_args.patch_max",
        "12",
        "--data.init_args.val_chips",
        "2",
        "--data.init_args.chips_per_epoch",
        "4",
    ]
    bundle, _ = fitted("change_synthetic", *extra)
    x = torch.randn(1, 10, 32, 32)
    prob = bundle.predict_batch(x, x + 1)
    assert prob.shape == (1, 2, 32, 32) and bundle.num_inputs == 2


@pytest.mark.slow
def test_fit_change_pairs_on_another_grid(fitted, shared_data, tmp_path):
    triple = label_data.write_change_triple(tmp_path / "pairs", shared_data)
    extra = [
        "--data.init_args.date1",
        f"[{triple['date1']}]",
        "--data.init_args.date2",
        f"[{triple['date2']}]",
        "--data.init_args.labels",
        f"[{triple['mask']}]",
        "--data.init_args.block_size",
        "64",
    ]
    bundle, path = fitted("change_pairs", *extra)
    card = bundle.card
    first = ImageReader(triple["date1"], card)
    second = ImageReader(triple["date2"], card)
    assert not second.same_grid(first)
    aligned = second.aligned_to(first)
    a, valid_a = first.read(Window(0, 0, 64, 64))
    b, valid_b = aligned.read(Window(0, 0, 64, 64))
    assert b.shape == a.shape and valid_b.mean() > 0.8
    # outside the pasted rectangles the resampled date 2 stays close to date 1's scene
    assert np.isfinite(b).all()
    status = main(
        [
            "validate",
            "--model",
            str(path),
            "--image",
            str(triple["date1"]),
            "--image2",
            str(triple["date2"]),
            "--labels",
            str(triple["mask"]),
            "--format",
            "json",
        ]
    )
    assert status == 0
