"""Multi-resolution crop mixes (DINOv3's global_local_crop_pairs_ratios) in SSLDataModule."""

from __future__ import annotations

import math
from collections import Counter

import lightning.pytorch as pl
import pytest
import torch

from dinogeo.errors import ConfigError
from dinogeo.ssl.crop_mix import CropMix, CropMixEntry
from dinogeo.ssl.datamodule import SSLDataModule
from dinogeo.ssl.module import SSLTask
from dinogeo.ssl.task_config import DINOHeadConfig, GramConfig, LossConfig, OptimConfig

S2_10M = "sentinel2-l1c-virginia-sattestdata/S2_18SVG_20160112_10m_B02-B03-B04-B08_crop.tif"
MIX = [
    {"global_size": 32, "local_size": 16, "gram_size": 48, "weight": 0.5},
    {"global_size": 48, "local_size": 32, "gram_size": 64, "weight": 0.5},
]
HEAD = DINOHeadConfig(out_dim=32, hidden_dim=32, bottleneck_dim=16)


def _dm(shared, *, mix=MIX, batch_size=4, samples=32, workers=0, seed=0, **kwargs):
    dm = SSLDataModule(
        sources=[str(shared / S2_10M)],
        sensor="sentinel2_l1c",
        bands=["B02", "B03", "B04", "B08"],
        samples_per_epoch=samples,
        batch_size=batch_size,
        num_workers=workers,
        n_local=2,
        crop_mix=mix,
        seed=seed,
        **kwargs,
    )
    dm.setup("fit")
    return dm


def _sizes(batch):
    return (
        batch["global_crops"].shape[-1],
        batch["local_crops"].shape[-1],
        batch["gram_crops"].shape[-1],
    )


def _triples(mix):
    return [(e["global_size"], e["local_size"], e["gram_size"]) for e in mix]


# ---------------------------------------------------------------------------- the chooser
def test_choice_follows_the_weights_and_is_a_pure_function():
    mix = CropMix(
        [
            CropMixEntry(32, 16, weight=6),
            {"global_size": 48, "local_size": 16, "weight": 3},
            {"global_size": 64, "local_size": 32, "weight": 1},
        ],
        patch_size=16,
    )
    assert mix.probabilities == pytest.approx((0.6, 0.3, 0.1))
    draws = [mix.choose(7, epoch, batch) for epoch in range(4) for batch in range(1000)]
    counts = Counter(draws)
    for index, p in enumerate(mix.probabilities):
        assert counts[index] / len(draws) == pytest.approx(p, abs=0.03)
    again = CropMix(mix.to_config(), patch_size=16)
    assert [again.choose(7, e, b) for e in range(4) for b in range(1000)] == draws
    # another seed or epoch gives another sequence
    assert [mix.choose(8, 0, b) for b in range(50)] != draws[:50]
    assert draws[1000:1050] != draws[:50]
    assert mix.largest == 64 and not mix.has_gram


def test_bad_mixes_raise_config_errors(shared_data):
    with pytest.raises(ConfigError, match="weight=0.0 must be a finite number > 0"):
        CropMix([{"global_size": 32, "local_size": 16, "weight": 0}], 16)
    with pytest.raises(ConfigError, match="weight=-1.0"):
        CropMix([{"global_size": 32, "local_size": 16, "weight": -1}], 16)
    with pytest.raises(ConfigError, match="weight=nan"):
        CropMix([{"global_size": 32, "local_size": 16, "weight": math.nan}], 16)
    with pytest.raises(ConfigError, match="non-empty list"):
        CropMix([], 16)
    with pytest.raises(ConfigError, match=r"crop_mix\[1\].local_size=20 .* use e.g. 16"):
        CropMix([{"global_size": 32, "local_size": 16}, {"global_size": 32, "local_size": 20}], 16)
    with pytest.raises(ConfigError, match="gram_size is set in entries"):
        CropMix(
            [{"global_size": 32, "local_size": 16, "gram_size": 64}, MIX[1] | {"gram_size": None}],
            16,
        )
    with pytest.raises(ConfigError, match="unknown: \\['size'\\]"):
        CropMix([{"global_size": 32, "local_size": 16, "size": 3}], 16)
    # the chip must cover the largest Gram/global crop of the mix
    with pytest.raises(
        ConfigError,
        match="largest Gram/global crop of data.crop_mix 64: raise data.chip_size to at least 64",
    ):
        _dm(shared_data, chip_size=48)
    assert _dm(shared_data).chip_size == 64  # default: the largest crop


# ---------------------------------------------------------------------------- the loader
def _batches(dm):
    """The epoch's training batches, augmented (on this CPU with the default augment_on)."""
    return [dm.on_after_batch_transfer(b, 0) for b in dm.train_dataloader()]


def test_every_batch_has_one_size_drawn_by_seed_epoch_batch(shared_data):
    dm = _dm(shared_data)
    assert dm.hparams["crop_mix"] == [dict(e) for e in MIX]  # plain dicts in checkpoints
    mix = CropMix(MIX, patch_size=16)
    batches = _batches(dm)
    assert len(batches) == 8
    sizes = [_sizes(b) for b in batches]
    expected = [_triples(MIX)[mix.choose(0, 0, k)] for k in range(8)]
    assert sizes == expected
    assert len(set(sizes)) == 2  # both resolutions occur in this epoch
    for batch, (g, _, _) in zip(batches, sizes):
        assert batch["masks"].shape == (8, (g // 16) ** 2)  # iBOT grid follows the crop size


def test_same_batches_with_workers_and_after_resume(shared_data):
    reference = _batches(_dm(shared_data))
    workers = _batches(_dm(shared_data, workers=2))
    assert len(workers) == len(reference)
    for a, b in zip(reference, workers):
        assert _sizes(a) == _sizes(b)
        assert torch.equal(a["global_crops"], b["global_crops"])
        assert torch.equal(a["gram_crops"], b["gram_crops"])
        assert torch.equal(a["masks"], b["masks"])
    # resume after 3 batches of epoch 0 (what SSLDataModule.state_dict saves)
    resumed = _dm(shared_data)
    resumed.load_state_dict({"epoch": 0, "samples": 3 * 4})
    tail = _batches(resumed)
    assert [_sizes(b) for b in tail] == [_sizes(b) for b in reference[3:]]
    for a, b in zip(reference[3:], tail):
        assert torch.equal(a["global_crops"], b["global_crops"])
    # a resume whose batch size changed: batches still have one size each (no stacking error)
    changed = _dm(shared_data, batch_size=3)
    changed.load_state_dict({"epoch": 0, "samples": 4})
    mix = CropMix(MIX, patch_size=16)
    got = [_sizes(b) for b in _batches(changed)]
    # positions 4, 5, 6 form the first batch: index (4 - 4 % 3) // 3 = 1, then 2, 3, ...
    assert len(got) == 9  # (32 - 4) // 3
    assert got == [_triples(MIX)[mix.choose(0, 0, k)] for k in range(1, 1 + len(got))]


def test_without_a_mix_nothing_changes(shared_data):
    plain = SSLDataModule(
        sources=[str(shared_data / S2_10M)],
        sensor="sentinel2_l1c",
        bands=["B02", "B03", "B04", "B08"],
        samples_per_epoch=8,
        batch_size=4,
        num_workers=0,
        global_size=32,
        local_size=16,
        n_local=2,
        gram_size=48,
    )
    one = _dm(shared_data, mix=[MIX[0] | {"weight": 1.0}], samples=8, chip_size=48)
    plain.setup("fit")
    for a, b in zip(_batches(plain), _batches(one)):
        for key in ("global_crops", "local_crops", "gram_crops", "masks"):
            assert torch.equal(a[key], b[key]), key


# ---------------------------------------------------------------------------- training
class _Record(pl.Callback):
    def __init__(self):
        self.rows = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        logs = {
            k: float(v)
            for k, v in trainer.callback_metrics.items()
            if k.startswith(("loss/", "data/"))
        }
        self.rows.append((_sizes(batch), logs))


def test_training_steps_on_real_imagery_with_gram(shared_data, tmp_path):
    dm = _dm(shared_data, samples=24)
    task = SSLTask(
        arch="vit_test_patch16_dinov3",
        in_chans=4,
        img_size=32,
        dino_head=HEAD,
        ibot_head=HEAD,
        backbone_kwargs={"init_values": 0.1},
        loss=LossConfig(koleo_weight=0.1),
        optim=OptimConfig(lr=1e-3, warmup_steps=1, schedule_steps=6),
        gram=GramConfig(enabled=True, weight=1.0),
    )
    record = _Record()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=6,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[record],
        default_root_dir=tmp_path,
    )
    trainer.fit(task, datamodule=dm)
    assert len(record.rows) == 6
    assert {sizes for sizes, _ in record.rows} == set(_triples(MIX))  # both resolutions trained
    for sizes, logs in record.rows:
        for key in ("loss/dino", "loss/ibot", "loss/koleo", "loss/gram", "loss/total"):
            assert math.isfinite(logs[key]), (sizes, key, logs)
        assert logs["data/global_size"] == sizes[0]  # each step logs its resolution
    # the checkpoint's datamodule hyperparameters hold plain dicts: loadable without pickle
    trainer.save_checkpoint(tmp_path / "mix.ckpt")
    state = torch.load(tmp_path / "mix.ckpt", weights_only=True)
    assert state["datamodule_hyper_parameters"]["crop_mix"] == [dict(e) for e in MIX]
