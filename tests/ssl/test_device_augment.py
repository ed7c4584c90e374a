"""The device-side pipeline against the per-sample one, on real Sentinel-2 chips.

Both paths augment the same 256 real chips (normalised once); the statistics of their outputs
must agree within sampling noise, and each statistic is checked to move when the operation it
watches is switched off (so the tolerances can fail).
"""

import dataclasses

import numpy as np
import pytest
import torch

from dinogeo.data.windowed import zero_invalid
from dinogeo.ssl.augment import MultiCropAugmentation
from dinogeo.ssl.batch_augment import BatchedMultiCrop
from dinogeo.ssl.collate import collate_multicrop
from dinogeo.ssl.datamodule import SSLDataModule
from dinogeo.ssl.device_augment import DeviceMultiCrop, normalize_raw

S2_10M = "sentinel2-l1c-virginia-sattestdata/S2_18SVG_20160112_10m_B02-B03-B04-B08_crop.tif"
N_IMAGES = 256
# gram_size == global_size: the Gram crop is the undistorted global crop (same box and D4
# element), so global - gram isolates the photometric distortions
AUG = dict(global_size=32, local_size=16, n_local=2, gram_size=32)


def _dm(shared, **kwargs):
    args = dict(
        sources=[str(shared / S2_10M)],
        sensor="sentinel2_l1c",
        bands=["B02", "B03", "B04", "B08"],
        samples_per_epoch=N_IMAGES,
        batch_size=64,
        num_workers=0,
        chip_size=48,
        patch_size=8,
        **AUG,
    )
    args.update(kwargs)
    dm = SSLDataModule(**args)
    dm.setup("fit")
    return dm


@pytest.fixture(scope="module")
def raw_batches(shared_data):
    return list(_dm(shared_data).train_dataloader())


@pytest.fixture(scope="module")
def chips(raw_batches):
    return torch.cat([normalize_raw(b) for b in raw_batches])


def test_normalize_raw_equals_sensor_normalize(shared_data, raw_batches):
    """Device normalisation == the workers' ``Sensor.normalize`` + ``zero_invalid``."""
    sensor = _dm(shared_data).sensor
    batch = raw_batches[0]
    assert batch["raw_uint16"] and batch["raw"].dtype == torch.int16
    raw = batch["raw"].numpy().view(np.uint16)
    valid = batch["valid"].numpy()
    got = normalize_raw(batch)
    for i in range(raw.shape[0]):
        ref = sensor.normalize(raw[i])
        zero_invalid(ref, valid[i], raw.dtype)
        np.testing.assert_allclose(got[i].numpy(), ref, rtol=1e-6, atol=1e-6)


def _per_sample(aug, chips, seed=0):
    gen = torch.Generator().manual_seed(seed)
    outs = [aug(chip, generator=gen) for chip in chips]
    return {k: torch.stack([c for o in outs for c in o[k]]) for k in outs[0]}


def _batched(aug, chips, seed=0, resample="auto"):
    return BatchedMultiCrop(aug, resample)(chips, torch.Generator().manual_seed(seed))


def _hf(x):
    """Mean absolute horizontal + vertical pixel difference (sharpness)."""
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean((1, 2, 3)) + (
        x[..., :, 1:] - x[..., :, :-1]
    ).abs().mean((1, 2, 3))


def _stats(out, n_images):
    g = out["global"].view(-1, *out["global"].shape[1:])
    r = out["gram"].view_as(g)
    second = torch.arange(g.shape[0]) >= n_images  # crop-major: global 2 of every image
    offset = g.mean((2, 3)) - r.mean((2, 3))  # (2B, C)
    gray = g.std(dim=1).amax((1, 2)) < 1e-5
    ratio = (g.std((2, 3)) / r.std((2, 3)).clamp(min=1e-6)).log()
    # solarised: all values reflected to <= 0, although the undistorted crop reaches > 1 std
    # above the mean (jitter alone cannot bring it below 0)
    solarised = g.amax((1, 2, 3)) <= 1e-6
    bright = r.amax((1, 2, 3)) > 1.0
    return {
        "band_mean": g.mean((0, 2, 3)),
        "band_std": g.std((0, 2, 3)),
        "local_band_mean": out["local"].mean((0, 2, 3)),
        "local_band_std": out["local"].std((0, 2, 3)),
        "offset_std": offset[~gray].std(),
        "gray_fraction": gray.float().mean(),
        "contrast_spread": ratio[~gray].std(),
        "blur_1": (_hf(g) / _hf(r))[~second].mean(),
        "blur_2": (_hf(g) / _hf(r))[second].mean(),
        "solarised_2": solarised[second & bright].float().mean(),
        "local_sharpness": _hf(out["local"]).mean(),
    }


# statistic: absolute tolerance (2-4 standard errors at 256 images; the seeds are fixed)
TOLERANCE = {
    "band_mean": 0.06,
    "band_std": 0.06,
    "local_band_mean": 0.06,
    "local_band_std": 0.06,
    "offset_std": 0.03,
    "gray_fraction": 0.08,
    "contrast_spread": 0.03,
    "blur_1": 0.04,
    "blur_2": 0.08,
    "solarised_2": 0.16,
    "local_sharpness": 0.015,
}


def _compare(a, b):
    bad = {}
    for key, tol in TOLERANCE.items():
        diff = float((a[key] - b[key]).abs().max())
        if diff > tol:
            bad[key] = (a[key].tolist(), b[key].tolist())
    return bad


def _reorder(out, n_images):
    """Per-sample outputs are image-major; make them crop-major like the batch."""
    res = {}
    for key, x in out.items():
        per = x.shape[0] // n_images
        res[key] = x.view(n_images, per, *x.shape[1:]).transpose(0, 1).flatten(0, 1)
    return res


@pytest.fixture(scope="module")
def reference(chips):
    aug = MultiCropAugmentation(**AUG)
    return _stats(_reorder(_per_sample(aug, chips), len(chips)), len(chips))


@pytest.mark.parametrize("resample", ["each", "gather"])  # the CPU and the accelerator kernel
def test_batched_statistics_match_per_sample(chips, reference, resample):
    """Crops, D4, jitter, grayscale, blur and solarisation: same statistics on real chips."""
    aug = MultiCropAugmentation(**AUG)
    got = _stats(_batched(aug, chips, seed=1, resample=resample), len(chips))
    assert _compare(reference, got) == {}
    # sanity of the reference itself: the recipe's probabilities are visible
    assert 0.1 < float(reference["gray_fraction"]) < 0.3
    assert float(reference["blur_2"]) < float(reference["blur_1"]) - 0.1
    assert 0.08 < float(reference["solarised_2"]) < 0.35


@pytest.mark.parametrize(
    ("change", "watched"),
    [
        (dict(jitter_p=0.0), {"offset_std", "contrast_spread"}),
        (dict(grayscale_p=0.0), {"gray_fraction"}),
        (dict(blur_p_global2=0.0), {"blur_2"}),
        (dict(solarize_p=0.0), {"solarised_2"}),
        (dict(local_scale=(0.5, 1.0)), {"local_sharpness"}),
        (dict(brightness=0.2), {"offset_std"}),
    ],
)
def test_statistics_detect_a_skipped_or_wrong_operation(chips, reference, change, watched):
    aug = MultiCropAugmentation(**{**AUG, **change})
    got = _stats(_batched(aug, chips, seed=2), len(chips))
    assert watched <= set(_compare(reference, got)), change


def test_device_batches_match_worker_batches(shared_data):
    """The datamodule's two paths: same keys, shapes, mask counts and band statistics."""
    dev = _dm(shared_data, gram_size=None, samples_per_epoch=128)
    wrk = _dm(shared_data, gram_size=None, samples_per_epoch=128, augment_on="workers")
    a = [dev.on_after_batch_transfer(b, 0) for b in dev.train_dataloader()]
    b = [wrk.on_after_batch_transfer(x, 0) for x in wrk.train_dataloader()]
    for x, y in zip(a, b, strict=True):
        assert set(x) == set(y)
        for key in ("global_crops", "local_crops", "masks"):
            assert x[key].shape == y[key].shape and x[key].dtype == y[key].dtype
        assert sorted(x["masks"].sum(1).tolist()) == sorted(y["masks"].sum(1).tolist())
        assert x["n_masked_patches"] == y["n_masked_patches"]
        assert x["n_masked_images"] == y["n_masked_images"]
        weight = x["masks_weight"].sum()
        torch.testing.assert_close(weight, torch.tensor(float((x["masks"].sum(1) > 0).sum())))
    ga = torch.cat([x["global_crops"] for x in a])
    gb = torch.cat([x["global_crops"] for x in b])
    torch.testing.assert_close(ga.mean((0, 2, 3)), gb.mean((0, 2, 3)), atol=0.08, rtol=0)
    torch.testing.assert_close(ga.std((0, 2, 3)), gb.std((0, 2, 3)), atol=0.08, rtol=0)


def test_device_batches_are_reproducible_and_resumable(shared_data):
    """Same seed, same batches; a resumed epoch replays the same raw chips and crops."""
    dm = _dm(shared_data, gram_size=None, samples_per_epoch=128)
    first = [dm.on_after_batch_transfer(b, 0) for b in dm.train_dataloader()]
    again = [
        dm.on_after_batch_transfer(b, 0)
        for b in _dm(
            shared_data, gram_size=None, samples_per_epoch=128, num_workers=2
        ).train_dataloader()
    ]
    for x, y in zip(first, again, strict=True):
        assert torch.equal(x["global_crops"], y["global_crops"])
        assert torch.equal(x["masks"], y["masks"])
    resumed = _dm(shared_data, gram_size=None, samples_per_epoch=128)
    resumed.load_state_dict({"epoch": 0, "samples": 64})
    tail = [resumed.on_after_batch_transfer(b, 0) for b in resumed.train_dataloader()]
    assert len(tail) == 1 and torch.equal(tail[0]["local_crops"], first[1]["local_crops"])


def test_augment_on_is_validated(shared_data):
    from dinogeo.errors import ConfigError

    with pytest.raises(ConfigError, match="augment_on"):
        _dm(shared_data, augment_on="gpu")


def test_device_multicrop_matches_collate_keys():
    """On the same crops' sizes, the device batch has collate_multicrop's keys and dtypes."""
    aug = MultiCropAugmentation(16, 8, 2, gram_size=32)
    raw = torch.randint(0, 4000, (3, 4, 40, 40), dtype=torch.int16)
    batch = {
        "raw": raw,
        "raw_uint16": False,
        "valid": torch.ones(3, 40, 40, dtype=torch.bool),
        "affine": torch.tensor([[1e-3] * 4, [-1.0] * 4]).expand(3, 2, 4),
        "crop": 0,
        "seed": 5,
    }
    got = DeviceMultiCrop([aug], patch_size=8)(batch)
    images = normalize_raw(batch)
    ref = collate_multicrop([aug(img) for img in images], patch_size=8)
    assert set(got) == set(ref)
    for key, value in ref.items():
        if isinstance(value, torch.Tensor):
            assert got[key].shape == value.shape or key in {"mask_indices", "masks_weight"}
            assert got[key].dtype == value.dtype
    assert dataclasses.is_dataclass(aug) is False  # plain class: its parameters are shared


@pytest.mark.parametrize("augment_on", ["device", "workers"])
def test_pretrain_cli_runs_both_paths(shared_data, tmp_path, monkeypatch, augment_on):
    """`dinogeo pretrain` with configs/ssl/default.yaml: every step's batch is built where asked."""
    from pathlib import Path

    from dinogeo.cli.main import main
    from dinogeo.ssl import device_augment

    calls = []
    original = device_augment.DeviceMultiCrop.__call__

    def spy(self, batch):
        calls.append(batch["raw"].shape)
        return original(self, batch)

    monkeypatch.setattr(device_augment.DeviceMultiCrop, "__call__", spy)
    monkeypatch.chdir(tmp_path)
    config = Path(__file__).resolve().parents[2] / "configs" / "ssl" / "default.yaml"
    args = ["pretrain", "--config", str(config), "--data.sources", f"[{shared_data / S2_10M}]"]
    args += ["--data.sensor", "sentinel2_l1c", "--data.bands", "[B02, B03, B04, B08]"]
    args += ["--trainer.max_steps", "3", "--trainer.enable_progress_bar", "false"]
    args += [
        "--data.augment_on",
        augment_on,
        "--model.export_path",
        str(tmp_path / "b.safetensors"),
    ]
    assert main(args) == 0
    assert (tmp_path / "b.safetensors").exists()
    if augment_on == "device":  # the default config's path: 3 raw batches of 8 uint16 chips
        assert [tuple(s) for s in calls] == [(8, 4, 96, 96)] * 3
    else:
        assert calls == []


def test_normalize_raw_into_a_buffer_zeroes_invalid_pixels():
    """Written into a reused buffer, with and without invalid pixels (the all-valid shortcut)."""
    gen = torch.Generator().manual_seed(4)
    raw = torch.randint(0, 4000, (3, 2, 6, 5), dtype=torch.int16, generator=gen)
    affine = torch.tensor([[1e-3, 2e-3], [-1.0, 0.5]]).expand(3, 2, 2)
    ref = raw.float() * affine[:, 0, :, None, None] + affine[:, 1, :, None, None]
    buffer = torch.full((3, 2, 6, 5), float("nan"))
    for valid in (torch.ones(3, 6, 5, dtype=torch.bool), torch.rand(3, 6, 5, generator=gen) > 0.3):
        batch = {"raw": raw, "raw_uint16": False, "valid": valid, "affine": affine}
        got = normalize_raw(batch, out=buffer)
        assert got.data_ptr() == buffer.data_ptr()
        torch.testing.assert_close(got, torch.where(valid[:, None], ref, 0.0))
        torch.testing.assert_close(normalize_raw(batch), got)
    assert not bool(valid.all())  # the second batch had invalid pixels
