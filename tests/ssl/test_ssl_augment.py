import math

import pytest
import torch
import torch.nn.functional as F

from dinogeo.errors import ConfigError
from dinogeo.ssl.augment import MultiCropAugmentation, random_resized_crop_box

NO_DISTORTION = dict(
    jitter_p=0.0,
    grayscale_p=0.0,
    blur_p_global1=0.0,
    blur_p_global2=0.0,
    blur_p_local=0.0,
    solarize_p=0.0,
)


def smooth_image(channels=4, height=120, width=100):
    yy, xx = torch.meshgrid(
        torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij"
    )
    bands = [
        torch.sin(2 * math.pi * (c + 1) * 0.5 * xx) * torch.cos(math.pi * (c + 1) * 0.7 * yy)
        for c in range(channels)
    ]
    return torch.stack(bands) + 0.5 * (xx - yy)


def test_output_sizes_and_channels():
    aug = MultiCropAugmentation(global_size=48, local_size=24, n_local=3, gram_size=96)
    out = aug(torch.randn(6, 80, 70), generator=torch.Generator().manual_seed(0))
    assert set(out) == {"global", "local", "gram"}
    assert [tuple(x.shape) for x in out["global"]] == [(6, 48, 48)] * 2
    assert [tuple(x.shape) for x in out["local"]] == [(6, 24, 24)] * 3
    assert [tuple(x.shape) for x in out["gram"]] == [(6, 96, 96)] * 2
    assert all(x.dtype == torch.float32 and x.is_contiguous() for v in out.values() for x in v)
    no_gram = MultiCropAugmentation(32, 16, 0)(torch.randn(1, 40, 40))
    assert set(no_gram) == {"global", "local"} and no_gram["local"] == []


def test_reproducible_with_generator():
    aug = MultiCropAugmentation(32, 16, 2)
    img = torch.randn(3, 50, 50)
    a = aug(img, generator=torch.Generator().manual_seed(5))
    b = aug(img, generator=torch.Generator().manual_seed(5))
    assert all(torch.equal(x, y) for k in a for x, y in zip(a[k], b[k]))


def test_gram_crop_is_the_same_region_at_twice_the_size():
    img = smooth_image()
    aug = MultiCropAugmentation(
        global_size=32, local_size=16, n_local=1, gram_size=64, **NO_DISTORTION
    )
    errors, other = [], []
    for seed in range(6):
        out = aug(img, generator=torch.Generator().manual_seed(seed))
        for g, gram in zip(out["global"], out["gram"]):
            down = F.interpolate(gram[None], size=(32, 32), mode="bicubic", antialias=True)[0]
            errors.append(float((down - g).abs().mean()))
        # the two global crops are different views
        other.append(float((out["global"][0] - out["global"][1]).abs().mean()))
    assert max(errors) < 0.03
    assert min(other) > 10 * max(errors)


def test_gram_crop_is_undistorted_when_globals_are_distorted():
    img = smooth_image()
    plain = MultiCropAugmentation(32, 16, 0, gram_size=64, **NO_DISTORTION)
    noisy = MultiCropAugmentation(
        32, 16, 0, gram_size=64, jitter_p=1.0, grayscale_p=0.0, blur_p_global1=1.0
    )
    # same draws for the geometry come first, so compare the gram crops of both pipelines
    a = plain(img, generator=torch.Generator().manual_seed(1))
    b = noisy(img, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a["gram"][0], b["gram"][0])
    assert not torch.allclose(a["global"][0], b["global"][0])


def test_photometric_options():
    img = smooth_image(channels=3)
    g = torch.Generator().manual_seed(0)
    gray = MultiCropAugmentation(32, 16, 2, **{**NO_DISTORTION, "grayscale_p": 1.0})(
        img, generator=g
    )
    for crop in gray["global"] + gray["local"]:
        torch.testing.assert_close(crop[0], crop[2])
    sol = MultiCropAugmentation(32, 16, 0, **{**NO_DISTORTION, "solarize_p": 1.0})(img, generator=g)
    assert sol["global"][1].max() <= 0.0 < sol["global"][0].max()  # only global 2, x >= 0 -> -x
    thr = MultiCropAugmentation(
        32, 16, 0, **{**NO_DISTORTION, "solarize_p": 1.0, "solarize_threshold": [0.5, 0.5, 0.5]}
    )
    assert thr(img, generator=g)["global"][1].max() <= 0.5
    blur = MultiCropAugmentation(
        32, 16, 0, **{**NO_DISTORTION, "blur_p_global2": 1.0, "blur_sigma": (2.0, 2.0)}
    )
    plain = MultiCropAugmentation(32, 16, 0, **NO_DISTORTION)
    noise = torch.randn(3, 64, 64)
    b = blur(noise, generator=torch.Generator().manual_seed(2))["global"]
    p = plain(noise, generator=torch.Generator().manual_seed(2))["global"]
    torch.testing.assert_close(b[0], p[0])  # global 1 never blurred
    assert b[1].std() < 0.7 * p[1].std()  # global 2 blurred
    jit = MultiCropAugmentation(32, 16, 0, **{**NO_DISTORTION, "jitter_p": 1.0})
    j = jit(noise, generator=torch.Generator().manual_seed(2))["global"][0]
    assert not torch.allclose(j, p[0])


def test_crop_box_and_errors():
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        top, left, h, w = random_resized_crop_box(100, 60, (0.05, 0.32), generator=g)
        assert 0 <= top and top + h <= 100 and 0 <= left and left + w <= 60
        assert 0.03 * 6000 <= h * w <= 0.4 * 6000
    # impossible scale -> central fallback inside the image
    assert random_resized_crop_box(10, 100, (1.0, 1.0)) == (0, 43, 10, 13)
    with pytest.raises(ConfigError):
        MultiCropAugmentation(global_scale=(0.0, 1.0))
    with pytest.raises(ConfigError):
        MultiCropAugmentation(blur_kernel=8)
    with pytest.raises(ConfigError):
        MultiCropAugmentation(32, 16, 0)(torch.zeros(10, 10))
