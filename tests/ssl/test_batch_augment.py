"""Maths of the batched augmentation: each operation against the per-sample implementation."""

import math

import pytest
import torch

from dinogeo.errors import ConfigError
from dinogeo.ssl import batch_augment as ba
from dinogeo.ssl.augment import (
    MultiCropAugmentation,
    _d4,
    _gaussian_blur,
    _resample,
    random_resized_crop_box,
)
from dinogeo.ssl.batch_masking import make_ibot_masks_batched
from dinogeo.ssl.masking import make_ibot_masks
from tests.ssl.test_ssl_augment import NO_DISTORTION

_NO_BLUR = dict(blur_p_global1=0.0, blur_p_global2=0.0, blur_p_local=0.0, solarize_p=0.0)


@pytest.mark.parametrize("method", ["gather", "each"])
def test_resample_boxes_equals_interpolate_and_d4(method):
    """Every box size (up- and down-sampling), output size and D4 element, both kernels."""
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(5, 3, 50, 41, generator=gen)
    boxes, elements, sources, sizes = [], [], [], []
    for _ in range(60):
        h = int(torch.randint(1, 51, (), generator=gen))
        w = int(torch.randint(1, 42, (), generator=gen))
        top = int(torch.randint(0, 50 - h + 1, (), generator=gen))
        left = int(torch.randint(0, 41 - w + 1, (), generator=gen))
        boxes.append((top, left, h, w))
        elements.append(int(torch.randint(0, 8, (), generator=gen)))
        sources.append(int(torch.randint(0, 5, (), generator=gen)))
        sizes.append(int(torch.randint(1, 90, (), generator=gen)))
    for size in sorted(set(sizes))[:12]:
        pick = [i for i, s in enumerate(sizes) if s == size] or [0]
        got = ba.resample_boxes(
            images,
            torch.tensor([boxes[i] for i in pick]),
            size,
            torch.tensor([elements[i] for i in pick]),
            torch.tensor([sources[i] for i in pick]),
            method=method,
        )
        for row, i in enumerate(pick):
            ref = _d4(_resample(images[sources[i]], boxes[i], size), elements[i])
            torch.testing.assert_close(got[row], ref, atol=2e-5, rtol=1e-5)


def test_resample_rejects_unknown_method():
    with pytest.raises(ConfigError, match="gather or each"):
        ba.resample_boxes(torch.zeros(1, 1, 4, 4), torch.tensor([[0, 0, 4, 4]]), 4, method="x")


def test_d4_parts_match_rot90_and_flip():
    x = torch.arange(36.0).view(1, 6, 6)
    for e in range(8):
        t, fr, fc = (bool(p) for p in ba.d4_parts(torch.tensor([e])))
        y = x.flip(-1) if fc else x
        y = y.flip(-2) if fr else y
        y = y.transpose(-1, -2) if t else y
        assert torch.equal(y, _d4(x, e)), e


def test_random_boxes_distribution_matches_per_sample():
    """Area fraction, aspect ratio and position of 4000 boxes: same distribution."""
    gen = torch.Generator().manual_seed(1)
    height, width = 96, 80
    for scale in [(0.32, 1.0), (0.05, 0.32)]:
        ref = torch.tensor(
            [random_resized_crop_box(height, width, scale, generator=gen) for _ in range(4000)],
            dtype=torch.float64,
        )
        got = ba.random_boxes(4000, height, width, scale, (3 / 4, 4 / 3), gen).double()
        assert ((got[:, 0] + got[:, 2]) <= height).all() and (
            (got[:, 1] + got[:, 3]) <= width
        ).all()
        assert (got >= 0).all()
        for stats in (
            lambda b: b[:, 2] * b[:, 3] / (height * width),  # area fraction
            lambda b: torch.log(b[:, 3] / b[:, 2]),  # aspect
            lambda b: (b[:, 0] + b[:, 2] / 2) / height,  # centre row
        ):
            r, g = stats(ref), stats(got)
            for q in (0.1, 0.5, 0.9):
                assert abs(torch.quantile(r, q) - torch.quantile(g, q)) < 0.03, (scale, q)
            assert abs(r.mean() - g.mean()) < 0.02


def test_random_boxes_fallback_is_central():
    """No try fits (a very thin image with the default ratios): the largest central box."""
    gen = torch.Generator().manual_seed(0)
    got = ba.random_boxes(5, 4, 200, (0.9, 1.0), (3 / 4, 4 / 3), gen)
    ref = random_resized_crop_box(4, 200, (0.9, 1.0), generator=gen)
    assert got.tolist() == [list(ref)] * 5


def test_blur_equals_per_crop_gaussian():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(6, 3, 20, 17, generator=gen)
    sigma = torch.rand(6, generator=gen) * 1.9 + 0.1
    got = ba._blur(x, sigma, 9)
    for i in range(6):
        ref = _gaussian_blur(x[i], 9, float(sigma[i]))
        torch.testing.assert_close(got[i], ref, atol=1e-5, rtol=1e-5)
    tiny = torch.randn(2, 3, 4, 4, generator=gen)  # smaller than the radius: replicate padding
    torch.testing.assert_close(
        ba._blur(tiny, torch.tensor([1.0, 1.0]), 9)[0], _gaussian_blur(tiny[0], 9, 1.0)
    )


def _orientation(crop):
    """D4 element seen on a crop of the ramp image ``100 * row + col`` (bands identical)."""
    band = crop[0]
    dy = float(band[-1, :].mean() - band[0, :].mean())
    dx = float(band[:, -1].mean() - band[:, 0].mean())
    return (dy > 0, dx > 0, abs(dy) > abs(dx))


@pytest.mark.parametrize("flips", [True, False])
def test_d4_frequencies_match(flips):
    """Uniform over the 8 orientations with flips (each about 1/8), identity without."""
    height = width = 48
    rows = torch.arange(height, dtype=torch.float32)[:, None]
    cols = torch.arange(width, dtype=torch.float32)[None, :]
    ramp = (100 * rows + cols).expand(2, height, width)
    aug = MultiCropAugmentation(16, 8, 2, flips=flips, **NO_DISTORTION)
    gen = torch.Generator().manual_seed(3)
    n = 400
    ref = []
    for _ in range(n // 4):
        out = aug(ramp, gen)
        ref += [_orientation(c) for c in out["local"] + out["global"]]
    got = ba.BatchedMultiCrop(aug)(ramp.expand(n // 4, -1, -1, -1).contiguous(), gen)
    batched = [_orientation(c) for c in [*got["local"], *got["global"]]]
    for seen in (ref, batched):
        kinds = {k: seen.count(k) / len(seen) for k in set(seen)}
        if flips:
            assert len(kinds) == 8 and all(0.08 < f < 0.17 for f in kinds.values()), kinds
        else:
            assert kinds == {(True, True, True): 1.0}


def test_batched_masks_counts_and_blocks_match():
    gen = torch.Generator().manual_seed(4)
    ref = torch.cat(
        [make_ibot_masks(64, (14, 14), (0.1, 0.5), 0.5, generator=gen) for _ in range(6)]
    )
    got = torch.cat([make_ibot_masks_batched(64, (14, 14), (0.1, 0.5), 0.5, gen) for _ in range(6)])
    assert sorted(ref.sum(1).tolist()) == sorted(got.sum(1).tolist())

    def adjacency(m):
        m = m.view(-1, 14, 14).float()
        return float((m[:, :, 1:] * m[:, :, :-1]).sum() / m[:, :, :-1].sum())

    # block masks: about 80 % of masked patches have a masked right neighbour (random: ~30 %)
    assert abs(adjacency(ref) - adjacency(got)) < 0.04
    assert adjacency(got) > 0.7
    # masked crops are spread over the batch (shuffled), not the first half
    first_half = got.view(6, 64, -1)[:, :32].any(-1).float().mean()
    assert 0.3 < float(first_half) < 0.7
    assert make_ibot_masks_batched(8, (4, 4), (0.1, 0.5), 0.0, gen).sum() == 0


def test_batched_multicrop_validates_input():
    with pytest.raises(ConfigError, match="float"):
        ba.BatchedMultiCrop(MultiCropAugmentation(16, 8, 1))(
            torch.zeros(1, 2, 20, 20, dtype=torch.int16), torch.Generator()
        )
    aug = MultiCropAugmentation(16, 8, 1, solarize_p=1.0, solarize_threshold=[0.0, 0.0, 0.0])
    with pytest.raises(ConfigError, match="solarize_threshold"):
        ba.BatchedMultiCrop(aug)(torch.zeros(2, 2, 20, 20), torch.Generator())


def test_output_shapes_crop_major_and_deterministic():
    aug = MultiCropAugmentation(16, 8, 3, gram_size=32)
    x = torch.randn(5, 4, 40, 40)
    a = ba.BatchedMultiCrop(aug)(x, torch.Generator().manual_seed(0))
    b = ba.BatchedMultiCrop(aug)(x, torch.Generator().manual_seed(0))
    assert tuple(a["global"].shape) == (10, 4, 16, 16)
    assert tuple(a["local"].shape) == (15, 4, 8, 8)
    assert tuple(a["gram"].shape) == (10, 4, 32, 32)
    assert all(torch.equal(a[k], b[k]) for k in a)
    none = ba.BatchedMultiCrop(MultiCropAugmentation(16, 8, 0))(x, torch.Generator())
    assert tuple(none["local"].shape) == (0, 4, 0, 0)
    assert math.isfinite(float(a["global"].sum()))


def test_chunks_keep_crop_major_order():
    """On CPU big crops are made a few at a time; every output stays crop-major."""
    b, chip, size = 7, 320, 300
    images = torch.arange(b, dtype=torch.float32).view(b, 1, 1, 1).expand(b, 4, chip, chip)
    aug = MultiCropAugmentation(size, 8, 3, gram_size=size, **NO_DISTORTION)
    assert ba._chunk(images.device, 4 * size * size, ba._GROUP) < b  # several groups per key
    out = ba.BatchedMultiCrop(aug)(images.contiguous(), torch.Generator().manual_seed(0))
    for key, n_crops in (("global", 2), ("local", 3), ("gram", 2)):
        means = out[key].mean(dim=(1, 2, 3)).view(n_crops, b)
        torch.testing.assert_close(means, torch.arange(b, dtype=torch.float32).expand(n_crops, b))


@pytest.mark.parametrize("flips", [True, False])
def test_cpu_pipeline_equals_accelerator_pipeline(flips):
    """Same draws, two orders: CPU (resample, distort, then D4 on writing) and accelerator
    (D4 in the resampling taps, then distort) give the same crops, so jitter, blur and
    solarisation commute with D4 as the CPU path assumes."""
    aug = MultiCropAugmentation(
        24,
        12,
        3,
        gram_size=32,
        flips=flips,
        jitter_p=0.7,
        grayscale_p=0.3,
        solarize_p=0.6,
        blur_p_global1=0.5,
    )
    x = torch.randn(6, 4, 40, 36, generator=torch.Generator().manual_seed(5))
    cpu = ba.BatchedMultiCrop(aug, "each")(x, torch.Generator().manual_seed(1))
    acc = ba.BatchedMultiCrop(aug, "gather")(x, torch.Generator().manual_seed(1))
    for key in ("global", "local", "gram"):
        torch.testing.assert_close(cpu[key], acc[key], atol=5e-5, rtol=1e-5)
    assert (
        float(
            (
                cpu["global"]
                - ba.resample_boxes(x, torch.tensor([[0, 0, 40, 36]] * 6), 24).repeat(2, 1, 1, 1)
            )
            .abs()
            .mean()
        )
        > 0.1
    )  # the crops are distorted


def _jitter_reference(aug, x, gen):
    """``MultiCropAugmentation._jitter`` on one crop, and the draws it made (same generator)."""
    state = gen.get_state()
    ref = aug._jitter(x, gen)
    replay = torch.Generator().manual_seed(0)
    replay.set_state(state)
    c = x.shape[0]
    on = float(torch.rand((), generator=replay)) < aug.jitter_p
    offset = factor = None
    sat = 1.0
    if on:
        offset = ((torch.rand(c, 1, 1, generator=replay) * 2 - 1) * aug.brightness).flatten()
        factor = (1 + (torch.rand(c, 1, 1, generator=replay) * 2 - 1) * aug.contrast).flatten()
        sat = 1 + (2 * float(torch.rand((), generator=replay)) - 1) * aug.saturation
    gray = float(torch.rand((), generator=replay)) < aug.grayscale_p
    return ref, on, offset, factor, sat, gray


def test_photometric_matrix_equals_per_sample_jitter():
    """Jitter + grayscale as one band-mixing matrix and offset == the per-sample sequence."""
    aug = MultiCropAugmentation(16, 8, 0, jitter_p=0.7, grayscale_p=0.3, **_NO_BLUR)
    batched = ba.BatchedMultiCrop(aug)
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(40, 4, 16, 16, generator=gen) * 2 + 1
    c = x.shape[1]
    refs, rows = [], {"mix": [], "factor": [], "offset": []}
    seen = set()
    for crop in x:
        ref, on, offset, factor, sat, gray = _jitter_reference(aug, crop, gen)
        refs.append(ref)
        seen.add((on, gray))
        mix = sat * torch.eye(c) + (1 - sat) / c
        rows["mix"].append(torch.full((c, c), 1 / c) @ mix if gray else mix)
        rows["factor"].append(factor if on else torch.ones(c))
        rows["offset"].append(offset if on else torch.zeros(c))
    n = x.shape[0]
    d = ba._Distortion(
        *(torch.stack(rows[k]) for k in ("mix", "factor", "offset")),
        torch.zeros(n, dtype=torch.bool),
        torch.ones(n),
        torch.zeros(n, dtype=torch.bool),
    )
    got = batched._distort(x.clone(), d, torch.zeros(1, 1, 1, 1))
    torch.testing.assert_close(got, torch.stack(refs), atol=2e-5, rtol=1e-5)
    assert len(seen) == 4  # jitter on/off x grayscale on/off all exercised


def test_drawn_matrices_are_saturation_and_grayscale():
    """The drawn matrices: saturation about the band mean (rows sum to 1), grayscale = 1/C."""
    c, n = 4, 400
    gen = torch.Generator().manual_seed(7)
    plain = ba.BatchedMultiCrop(MultiCropAugmentation(16, 8, 0, jitter_p=1.0, grayscale_p=0.0))
    d = plain._draw(n, c, torch.zeros(n), torch.zeros(n, dtype=torch.bool), gen)
    sat = d.mix[:, 0, 0] - d.mix[:, 0, 1]
    torch.testing.assert_close(
        d.mix, sat[:, None, None] * torch.eye(c) + (1 - sat[:, None, None]) / c
    )
    assert 0.79 < float(sat.min()) and float(sat.max()) < 1.21 and float(sat.std()) > 0.08
    assert float(d.factor.std()) > 0.15 and float(d.offset.abs().max()) <= 0.4
    gray = ba.BatchedMultiCrop(MultiCropAugmentation(16, 8, 0, jitter_p=0.0, grayscale_p=1.0))
    d = gray._draw(n, c, torch.zeros(n), torch.zeros(n, dtype=torch.bool), gen)
    torch.testing.assert_close(d.mix, torch.full((n, c, c), 1 / c))
    assert torch.equal(d.factor, torch.ones(n, c)) and torch.equal(d.offset, torch.zeros(n, c))


def test_blur_into_a_reused_workspace_equals_a_fresh_blur():
    """In place (``out=x``) and through a workspace left bigger by an earlier call, the blur is
    the per-crop Gaussian; a bigger earlier call leaves no trace in a smaller one."""
    gen = torch.Generator().manual_seed(3)
    ws = ba.Workspace()
    big = torch.randn(9, 4, 30, 30, generator=gen)
    ba._blur(big, torch.full((9,), 2.0), 9, workspace=ws)
    x = torch.randn(5, 4, 20, 20, generator=gen)
    sigma = torch.rand(5, generator=gen) * 1.9 + 0.1
    fresh = ba._blur(x, sigma, 9)
    inplace = x.clone()
    assert ba._blur(inplace, sigma, 9, out=inplace, workspace=ws) is inplace
    torch.testing.assert_close(inplace, fresh, atol=0, rtol=0)
    for i in range(5):
        torch.testing.assert_close(
            inplace[i], _gaussian_blur(x[i], 9, float(sigma[i])), atol=1e-5, rtol=1e-5
        )


def test_workspace_reuses_and_regrows_buffers():
    ws = ba.Workspace()
    a = ws.get("x", (4, 5), torch.float32, torch.device("cpu"))
    b = ws.get("x", (2, 3), torch.float32, torch.device("cpu"))
    assert b.data_ptr() == a.data_ptr() and b.shape == (2, 3) and b.is_contiguous()
    c = ws.get("x", (10, 10), torch.float32, torch.device("cpu"))
    assert c.shape == (10, 10) and c.numel() == 100
    d = ws.get("x", (10, 10), torch.float64, torch.device("cpu"))
    assert d.dtype == torch.float64


@pytest.mark.parametrize("resample", ["each", "gather"])
def test_repeated_calls_reuse_scratch_without_changing_results(resample):
    """One BatchedMultiCrop over batches of different sizes (its scratch buffers reused) gives
    what a fresh one gives, and a later call never changes an earlier call's crops."""
    aug = MultiCropAugmentation(24, 12, 3, gram_size=32, blur_p_global1=0.5, solarize_p=0.5)
    gen = torch.Generator().manual_seed(9)
    small = torch.randn(3, 4, 40, 40, generator=gen)
    large = torch.randn(7, 4, 48, 44, generator=gen)
    shared = ba.BatchedMultiCrop(aug, resample)
    first = shared(large, torch.Generator().manual_seed(1))
    kept = {k: v.clone() for k, v in first.items()}
    for images, seed in ((small, 2), (large, 3)):
        got = shared(images, torch.Generator().manual_seed(seed))
        ref = ba.BatchedMultiCrop(aug, resample)(images, torch.Generator().manual_seed(seed))
        for key in ref:
            torch.testing.assert_close(got[key], ref[key], atol=0, rtol=0)
    for key in kept:
        assert torch.equal(first[key], kept[key])


@pytest.mark.parametrize("shape", [(20, 17), (32, 32), (33, 40), (4, 40), (3, 5)])
def test_both_blur_kernels_equal_the_per_crop_gaussian(shape):
    """Matrix products (sides up to ``_BLUR_MATRIX_MAX``) and shifted multiply-adds (bigger),
    reflect and replicate padding, each equal to ``augment._gaussian_blur``."""
    gen = torch.Generator().manual_seed(8)
    x = torch.randn(4, 3, *shape, generator=gen)
    sigma = torch.rand(4, generator=gen) * 1.9 + 0.1
    got = ba._blur(x, sigma, 9)
    for i in range(4):
        ref = _gaussian_blur(x[i], 9, float(sigma[i]))
        torch.testing.assert_close(got[i], ref, atol=1e-5, rtol=1e-5)
    assert float((got - x).abs().mean()) > 0.05  # it blurs


@pytest.mark.parametrize("side", [20, 40])
def test_blur_keep_passes_crops_through_exactly(side):
    """``keep``: those crops come out bit for bit as they went in (both blur kernels), the
    others blurred as without ``keep``; a mostly blurred group takes that path in place."""
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(6, 4, side, side, generator=gen)
    sigma = torch.rand(6, generator=gen) * 1.9 + 0.1
    keep = torch.tensor([True, False, False, True, False, False])
    got = ba._blur(x, sigma, 9, keep=keep)
    assert torch.equal(got[keep], x[keep])
    torch.testing.assert_close(got[~keep], ba._blur(x[~keep], sigma[~keep], 9), atol=0, rtol=0)
    batched = ba.BatchedMultiCrop(MultiCropAugmentation(side, 8, 0))
    y = x.clone()
    batched._blur_chosen(y, ~torch.tensor([False, True, False, False, False, False]), sigma)
    assert torch.equal(y[1], x[1])
    torch.testing.assert_close(y[0], _gaussian_blur(x[0], 9, float(sigma[0])), atol=1e-5, rtol=1e-5)
    assert float((y[0] - x[0]).abs().mean()) > 0.05
