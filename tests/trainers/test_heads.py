import math

import pytest
import torch

from dinogeo.errors import CheckpointError, ConfigError
from dinogeo.models.backbone import create_backbone
from dinogeo.models.backbone_file import save_backbone
from dinogeo.models.bundle import ModelBundle, load_bundle, save_bundle
from dinogeo.models.card import WeightCard
from dinogeo.models.heads import HeadConfig, HeightModel, build_model, height_bin_centres
from dinogeo.models.task_card import load_task_card
from dinogeo.trainers.canopy_height import silog_loss
from dinogeo.trainers.land_cover import LandCoverTask
from dinogeo.trainers.metrics import TaskMetrics
from tests.trainers.conftest import RGB_IMAGERY


def _backbone(in_chans=3):
    torch.manual_seed(0)
    return create_backbone("vit_test_patch16_dinov3", in_chans=in_chans)


def test_height_bins_and_soft_argmax():
    centres = height_bin_centres(256, 1e-3, 96.0)
    assert centres[0] == pytest.approx(1e-3) and centres[-1] == pytest.approx(96.0)
    ratios = centres[1:] / centres[:-1]
    torch.testing.assert_close(ratios, torch.full_like(ratios, ratios[0].item()))  # log-spaced
    model = HeightModel(
        _backbone(), HeadConfig("height", 1, decoder="linear", bins=16, max_height=40.0)
    )
    with torch.no_grad():  # make the decoder put all mass on bin 10 whatever the input
        model.decoder.classifier.weight.zero_()
        model.decoder.classifier.bias.fill_(-50.0)
        model.decoder.classifier.bias[10] = 50.0
    heights = model(torch.randn(2, 3, 40, 24))  # padded internally to 48x32, cropped back
    assert heights.shape == (2, 1, 40, 24)
    torch.testing.assert_close(heights, torch.full_like(heights, model.bin_centres[10].item()))


@pytest.mark.parametrize("decoder, skip", [("linear", 0), ("dpt", 0), ("dpt", 4)])
def test_output_layer_produces_the_raw_outputs(decoder, skip):
    config = HeadConfig("segmentation", 3, decoder=decoder, features=8, image_skip=skip)
    model = build_model(_backbone(), config).eval()
    layer = model.output_layer()
    assert layer.out_channels == 3
    x = torch.randn(1, 3, 32, 32)
    before = model(x)
    with torch.no_grad():
        layer.bias += torch.tensor([1.0, 0.0, -1.0])  # a bias shift moves the logits by it
    torch.testing.assert_close(
        model(x) - before, torch.tensor([1.0, 0.0, -1.0]).view(1, 3, 1, 1).expand_as(before)
    )


def test_silog_loss():
    target = torch.tensor([0.0, 2.0, 10.0, 25.0])
    assert silog_loss(target, target) == pytest.approx(0.0, abs=1e-3)
    # a constant shift of log1p(h) costs only (1 - 0.85) of its square: nearly scale invariant
    shifted = torch.expm1(torch.log1p(target) + 0.5)
    assert silog_loss(shifted, target) == pytest.approx(math.sqrt(0.15) * 0.5, rel=1e-3)


def test_change_model_is_siamese_and_checks_grids():
    config = HeadConfig("change", 2, decoder="dpt", features=8, image_skip=4)
    model = build_model(_backbone(4), config)
    x = torch.randn(1, 4, 32, 32)
    out = model(x, x.flip(-1))
    assert out.shape == (1, 2, 32, 32)
    assert not any(p.grad is not None for p in model.backbone.parameters())
    with pytest.raises(ConfigError, match="resample date 2"):
        model(x, torch.randn(1, 4, 16, 32))


def test_unfreeze_last_blocks_and_param_groups():
    task = LandCoverTask(
        task="land_cover_aberystwyth", imagery=RGB_IMAGERY, unfreeze_last_blocks=1, decoder="linear"
    )
    backbone = task.model.backbone
    assert all(p.requires_grad for p in backbone.blocks[-1].parameters())
    assert not any(p.requires_grad for p in backbone.blocks[0].parameters())
    optimizer = task.configure_optimizers()
    assert [g["lr"] for g in optimizer.param_groups] == [1e-3, 1e-5]
    frozen = LandCoverTask(task="land_cover_aberystwyth", imagery=RGB_IMAGERY, decoder="linear")
    assert not any(p.requires_grad for p in frozen.model.backbone.parameters())
    with pytest.raises(ConfigError, match="needs 4 non-negative values"):
        LandCoverTask(task="land_cover_aberystwyth", imagery=RGB_IMAGERY, class_weights=[1.0, 2.0])
    with pytest.raises(
        ConfigError, match="trains segmentation heads but task card 'canopy_height'"
    ):
        LandCoverTask(task="canopy_height", imagery=RGB_IMAGERY)


def test_metrics_known_values():
    task = load_task_card("change")
    metrics = TaskMetrics(task)
    target = torch.tensor([[[0, 0, 1, 1, 255]]])
    scores = torch.tensor(
        [[[[1.0, 0.0, 0.0, 1.0, 1.0]], [[0.0, 1.0, 1.0, 0.0, 0.0]]]]
    )  # pred 0,1,1,0,(0)
    metrics.update(scores, target)
    m = metrics.compute()
    assert m["pixels"] == 4 and m["accuracy"] == pytest.approx(0.5)
    assert m["change_iou"] == pytest.approx(1 / 3) and m["change_f1"] == pytest.approx(0.5)
    heights = TaskMetrics(load_task_card("canopy_height"))
    ref = torch.tensor([[[1.0, 2.0, float("nan"), 5.0]]])
    heights.update(torch.tensor([[[[2.0, 2.0, 9.0, 7.0]]]]), ref)
    h = heights.compute()
    assert h["pixels"] == 3 and h["mae"] == pytest.approx(1.0) and h["bias"] == pytest.approx(1.0)
    assert h["rmse"] == pytest.approx(math.sqrt(5 / 3))


def test_bundle_rejects_other_files(tmp_path):
    backbone = _backbone()
    card = WeightCard.from_backbone(
        backbone,
        band_names=["red", "green", "blue"],
        sensor="rgb_uint8",
        mean=[0.5] * 3,
        std=[0.2] * 3,
    )
    path = tmp_path / "backbone.safetensors"
    save_backbone(path, backbone, card)
    with pytest.raises(CheckpointError, match="is not a dinogeo model bundle"):
        load_bundle(path)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="not a readable model bundle"):
        load_bundle(bad)
    # a fine-tuned backbone cannot be saved as a reference to the original file
    model = build_model(backbone, HeadConfig("segmentation", 4, decoder="linear"))
    bundle = ModelBundle(card, load_task_card("land_cover_aberystwyth"), model, model.config)
    with torch.no_grad():
        model.backbone.blocks[-1].mlp.fc1.weight.add_(1.0)
    with pytest.raises(CheckpointError, match="does not hold this model's backbone weights"):
        save_bundle(tmp_path / "b.safetensors", bundle, backbone_path=path)
    save_bundle(tmp_path / "b.safetensors", bundle)
    loaded = load_bundle(tmp_path / "b.safetensors")
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(loaded.predict_batch(x), bundle.predict_batch(x))
    with pytest.raises(ConfigError, match="takes 1 image batch"):
        loaded.predict_batch(x, x)
