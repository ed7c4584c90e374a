"""``data.photometric``: the distortions that change a pixel's spectrum can be turned off.

On multispectral land cover the spectrum is what separates the classes; ``Photometric.spectral()``
keeps the recipe's crops, flips, blur and solarisation and drops the band jitter and band mean.
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest
import torch
from rasterio.windows import Window

from dinogeo.data.opener import open_source
from dinogeo.data.sensors import load_sensor
from dinogeo.ssl import batch_augment as ba
from dinogeo.ssl.augment import MultiCropAugmentation, Photometric
from dinogeo.ssl.datamodule import SSLDataModule
from tests.ssl.test_pretrain_cli import ABER, parse_default, tiny
from tests.ssl.test_ssl_augment import NO_DISTORTION

BANDS = ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"]


def aber_chips(shared, n: int = 4, size: int = 48) -> torch.Tensor:
    """``n`` normalised chips of the real Aberystwyth 10-band scene, ``(n, 10, size, size)``."""
    sensor = load_sensor("sentinel2_l2a").select(BANDS)
    source = open_source(shared / ABER, sensor=sensor)
    chips = [
        source.read_normalized(Window(100 * k, 80 * k, size, size))[0] for k in range(1, n + 1)
    ]
    return torch.from_numpy(np.stack(chips)).float()


def first_global_per_sample(chip: torch.Tensor, **kwargs: object) -> torch.Tensor:
    aug = MultiCropAugmentation(32, 16, 2, **kwargs)  # type: ignore[arg-type]
    return aug(chip, generator=torch.Generator().manual_seed(3))["global"][0]


def first_globals_batched(chips: torch.Tensor, **kwargs: object) -> torch.Tensor:
    batched = ba.BatchedMultiCrop(MultiCropAugmentation(32, 16, 2, **kwargs))  # type: ignore[arg-type]
    return batched(chips, torch.Generator().manual_seed(3))["global"][0]


def test_spectral_changes_no_spectrum_of_real_pixels(shared_data):
    """Global crop 1 (never blurred or solarised): the spectral setting gives exactly the crop
    of the geometry alone, per sample and batched; the recipe's setting changes the spectra."""
    chips = aber_chips(shared_data)
    spectral = Photometric.spectral().kwargs()
    geometry = {**spectral, **NO_DISTORTION}
    recipe = Photometric().kwargs()
    for chip in chips:
        assert torch.equal(
            first_global_per_sample(chip, **spectral), first_global_per_sample(chip, **geometry)
        )
    assert torch.equal(
        first_globals_batched(chips, **spectral), first_globals_batched(chips, **geometry)
    )
    changed = [
        not torch.allclose(
            first_global_per_sample(chip, **recipe), first_global_per_sample(chip, **geometry)
        )
        for chip in chips
    ]
    assert any(changed)
    assert not torch.allclose(
        first_globals_batched(chips, **recipe), first_globals_batched(chips, **geometry)
    )


def test_defaults_are_the_recipe():
    """``Photometric()`` is what MultiCropAugmentation has always used."""
    aug = MultiCropAugmentation(32, 16, 2)
    assert Photometric() == Photometric(
        jitter_p=aug.jitter_p,
        brightness=aug.brightness,
        contrast=aug.contrast,
        saturation=aug.saturation,
        grayscale_p=aug.grayscale_p,
        blur_kernel=aug.blur_kernel,
        blur_sigma=aug.blur_sigma,
        blur_p_global1=aug.blur_p[0],
        blur_p_global2=aug.blur_p[1],
        blur_p_local=aug.blur_p[2],
        solarize_p=aug.solarize_p,
    )


@pytest.mark.parametrize("value", ["0.0", "0.35"])
def test_photometric_from_the_command_line(shared_data, tmp_path, monkeypatch, value):
    """``--data.photometric.*`` reaches both augmentation paths and the checkpoint's plain
    hyperparameters."""
    monkeypatch.chdir(tmp_path)
    cli = parse_default(
        *tiny(shared_data, 1),
        "--data.photometric.jitter_p",
        value,
        "--data.photometric.grayscale_p",
        "0",
    )
    dm = cli.datamodule
    assert isinstance(dm, SSLDataModule)
    assert dm.photometric == Photometric(jitter_p=float(value), grayscale_p=0.0)
    assert dm.augments[0].jitter_p == float(value) and dm.augments[0].grayscale_p == 0.0
    assert dm.device_augment.augments[0].augment is dm.augments[0]
    assert dm.hparams["photometric"] == asdict(dm.photometric)
    assert type(dm.hparams["photometric"]) is dict
