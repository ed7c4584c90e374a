import math
from fractions import Fraction

import pytest
import torch

from dinogeo.errors import ConfigError
from dinogeo.ssl.masking import BlockMaskGenerator, ibot_mask_counts, make_ibot_masks


@pytest.mark.parametrize("count", [0, 1, 3, 25, 77, 128, 200, 256])
def test_block_masks_have_exact_counts(count):
    gen = BlockMaskGenerator((16, 16))
    g = torch.Generator().manual_seed(count)
    mask = gen(count, generator=g)
    assert mask.shape == (16, 16) and mask.dtype == torch.bool
    assert int(mask.sum()) == count


def test_block_masks_are_blocky_and_reproducible():
    gen = BlockMaskGenerator((16, 16))
    neighbours = []
    for seed in range(20):
        mask = gen(60, generator=torch.Generator().manual_seed(seed))
        padded = torch.nn.functional.pad(mask.float()[None, None], (1, 1, 1, 1))[0, 0]
        nb = padded[:-2, 1:-1] + padded[2:, 1:-1] + padded[1:-1, :-2] + padded[1:-1, 2:]
        neighbours.append(float((nb[mask] > 0).float().mean()))
    # rectangles: almost every masked patch touches another; random masks (p=0.23) would
    # give about 1 - 0.77**4 = 0.65
    assert sum(neighbours) / len(neighbours) > 0.9
    a = gen(60, generator=torch.Generator().manual_seed(3))
    b = gen(60, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_block_generator_defaults_and_errors():
    gen = BlockMaskGenerator((14, 10))
    assert gen.max_num_patches == 70
    assert gen.log_aspect[1] == pytest.approx(math.log(1 / 0.3))
    with pytest.raises(ConfigError):
        gen(141)
    with pytest.raises(ConfigError):
        BlockMaskGenerator((0, 4))


def test_ratio_schedule_counts():
    # 8 crops, half masked: r = linspace(0.1, 0.5, 5) -> floor(N * r_{i+1}) for i < 4
    n = 196
    expected = [math.floor(n * (Fraction(1, 10) + Fraction(2, 5) * (i + 1) / 4)) for i in range(4)]
    assert ibot_mask_counts(8, n, (0.1, 0.5), 0.5) == expected == [39, 58, 78, 98]
    # exact products are not floored one too low (100 * 0.3 == 30)
    assert ibot_mask_counts(4, 100, (0.1, 0.5), 0.5) == [30, 50]
    assert ibot_mask_counts(5, 100, (0.1, 0.5), 0.5) == [30, 50]  # int(2.5) crops
    assert ibot_mask_counts(4, 100, (0.1, 0.5), 0.0) == []
    with pytest.raises(ConfigError):
        ibot_mask_counts(4, 100, (0.6, 0.5), 0.5)
    with pytest.raises(ConfigError):
        ibot_mask_counts(4, 100, (0.1, 0.5), 1.5)


def test_make_ibot_masks_shapes_counts_and_shuffle():
    first_masked = set()
    for seed in range(8):
        masks = make_ibot_masks(8, (14, 14), generator=torch.Generator().manual_seed(seed))
        assert masks.shape == (8, 196) and masks.dtype == torch.bool
        counts = sorted(int(c) for c in masks.sum(dim=1))
        assert counts == [0, 0, 0, 0, 39, 58, 78, 98]
        first_masked.add(tuple(bool(c) for c in masks.sum(dim=1)))
    assert len(first_masked) > 1  # the masked crops are not always the same positions
    all_masked = make_ibot_masks(4, (8, 8), (0.5, 0.5), mask_probability=1.0)
    assert all_masked.sum(dim=1).tolist() == [32, 32, 32, 32]
