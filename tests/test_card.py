"""Tests for dinogeo.models.card (weight cards, save/load)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from dinogeo.errors import BandMismatchError, CheckpointError, ConfigError
from dinogeo.models import (
    WeightCard,
    check_bands,
    create_backbone,
    create_backbone_from_card,
    load_backbone,
    save_backbone,
)
from dinogeo.models.card import hash_config

TEST_ARCH = "vit_test_patch16_dinov3"
S2_BANDS = ["B02", "B03", "B04", "B08"]


def _card(backbone, **kw):
    args = dict(
        band_names=S2_BANDS,
        sensor="sentinel2_l1c",
        mean=[0.1, 0.1, 0.1, 0.3],
        std=[0.05, 0.05, 0.06, 0.1],
        scale=1e-4,
        offset=0.0,
        training_config={"lr": 1e-3, "crops": {"global": 256, "local": [112, 8]}},
        source="scratch",
    )
    args.update(kw)
    return WeightCard.from_backbone(backbone, **args)


def _randomise(backbone):
    torch.manual_seed(3)
    with torch.no_grad():
        for p in backbone.parameters():
            p.copy_(torch.randn_like(p) * 0.1)
    return backbone


def test_hash_is_canonical():
    a = hash_config({"b": 1, "a": [1, 2], "c": {"y": 2.5, "x": None}})
    b = hash_config({"c": {"x": None, "y": 2.5}, "a": (1, 2), "b": 1})
    assert a == b and len(a) == 64
    assert hash_config({"b": 2}) != hash_config({"b": 1})


def test_card_fields_and_validation():
    bb = create_backbone(TEST_ARCH, in_chans=4)
    card = _card(bb)
    assert (card.arch, card.patch_size, card.embed_dim, card.in_chans) == (TEST_ARCH, 16, 64, 4)
    assert card.config_hash == hash_config(card.training_config)
    assert card.created and card.dinogeo_version
    again = WeightCard.from_json(card.to_json())
    assert again == card
    with pytest.raises(ConfigError, match="one mean and one std per band"):
        _card(bb, mean=[0.1, 0.2])
    with pytest.raises(BandMismatchError, match="one name per input band"):
        _card(bb, band_names=["B02", "B03"], mean=[0, 0], std=[1, 1])
    tampered = card.to_dict()
    tampered["training_config"]["lr"] = 1.0
    with pytest.raises(CheckpointError, match="does not match the training_config"):
        WeightCard.from_dict(tampered)


def test_save_load_round_trip(tmp_path):
    bb = _randomise(create_backbone(TEST_ARCH, in_chans=4, rope_rescale_coords=2.0)).eval()
    card = _card(bb)
    path = tmp_path / "backbone.safetensors"
    save_backbone(path, bb, card)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert json.loads(meta["dinogeo_card"])["band_names"] == S2_BANDS
    loaded, card2 = load_backbone(path)
    assert card2.band_names == S2_BANDS and card2.config_hash == card.config_hash
    assert card2.backbone_kwargs["rope_rescale_coords"] == 2.0
    assert not loaded.training
    x = torch.randn(2, 4, 48, 32)
    with torch.no_grad():
        ref = bb.forward_features(x)
        out = loaded.forward_features(x)
    for key in ref:
        assert torch.equal(ref[key], out[key])
    assert torch.equal(loaded.mask_token, bb.mask_token)
    assert not list(tmp_path.glob("*.tmp"))  # atomic write left no temp file


def test_custom_overrides_rebuild(tmp_path):
    bb = create_backbone(TEST_ARCH, in_chans=4, depth=2)
    path = tmp_path / "b.safetensors"
    save_backbone(path, bb, _card(bb))
    loaded, card = load_backbone(path)
    assert loaded.depth == 2 and card.backbone_kwargs["depth"] == 2
    assert create_backbone_from_card(card).depth == 2


def test_lightning_style_checkpoint(tmp_path):
    bb = _randomise(create_backbone(TEST_ARCH, in_chans=4)).eval()
    card = _card(bb)
    state = {f"student.backbone.{k}": v + 1 for k, v in bb.state_dict().items()}
    state.update({f"teacher.backbone.{k}": v for k, v in bb.state_dict().items()})
    state["dino_head.weight"] = torch.zeros(3, 3)
    ckpt = {"state_dict": state, "dinogeo_card": card.to_dict(), "epoch": 3}
    torch.save(ckpt, tmp_path / "last.ckpt")
    loaded, _ = load_backbone(tmp_path / "last.ckpt")  # the EMA teacher is chosen
    x = torch.randn(1, 4, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), bb(x))
    student, _ = load_backbone(tmp_path / "last.ckpt", prefix="student.backbone.")
    assert torch.equal(student.mask_token, bb.mask_token + 1)


def test_load_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_backbone(tmp_path / "missing.safetensors")
    bare = tmp_path / "bare.safetensors"
    save_file({"a": torch.zeros(2)}, str(bare))
    with pytest.raises(CheckpointError, match="no dinogeo weight card"):
        load_backbone(bare)
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00\x01garbage" * 10)
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_backbone(corrupt)
    bb = create_backbone(TEST_ARCH, in_chans=4)
    card = _card(bb)
    # weights for 3 bands, card for 4
    torch.save(
        {"backbone": create_backbone(TEST_ARCH).state_dict(), "dinogeo_card": card.to_json()},
        tmp_path / "wrong.pt",
    )
    with pytest.raises(CheckpointError, match="does not match its weight card"):
        load_backbone(tmp_path / "wrong.pt")
    # a pickled object that weights_only refuses
    torch.save(
        {"dinogeo_card": card.to_dict(), "obj": object.__new__(WeightCard)}, tmp_path / "o.pt"
    )
    with pytest.raises(CheckpointError, match="cannot be loaded safely"):
        load_backbone(tmp_path / "o.pt")
    with pytest.raises(CheckpointError, match="unknown backbone file type"):
        (tmp_path / "x.bin").write_bytes(b"1")
        load_backbone(tmp_path / "x.bin")


def test_check_bands_messages():
    bb = create_backbone(TEST_ARCH, in_chans=4)
    card = _card(bb)
    check_bands(card, ["b02", "B03", "B04", "B08"])  # case-insensitive match passes
    with pytest.raises(BandMismatchError) as err:
        check_bands(card, ["B04", "B03", "B02", "B08"], source="scene.tif")
    msg = str(err.value)
    assert "scene.tif" in msg and "['B04', 'B03', 'B02', 'B08']" in msg
    assert "['B02', 'B03', 'B04', 'B08']" in msg and "reorder" in msg
    with pytest.raises(BandMismatchError, match="select the backbone's bands"):
        check_bands(card, ["B01", "B02", "B03", "B04", "B08"])
    with pytest.raises(BandMismatchError, match=r"lacks \['B08'\]"):
        check_bands(card, ["B02", "B03", "B04"])
