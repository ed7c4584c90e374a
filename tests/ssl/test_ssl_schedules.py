import numpy as np
import pytest

from dinogeo.errors import ConfigError
from dinogeo.ssl.schedules import lr_scaling, warmup_constant, warmup_cosine


def test_warmup_cosine_key_steps():
    s = warmup_cosine(0.0, 1e-3, 1e-6, total_steps=111, warmup_steps=10)
    assert len(s) == 111
    assert s[0] == 0.0
    assert s[5] == pytest.approx(0.5e-3)
    assert s[9] == pytest.approx(0.9e-3)
    assert s[10] == pytest.approx(1e-3)  # peak at the first cosine step
    assert s[60] == pytest.approx((1e-3 + 1e-6) / 2)  # cosine midpoint
    assert s[110] == pytest.approx(1e-6)
    assert s[10_000] == pytest.approx(1e-6)  # past the end: last value
    assert np.all(np.diff(np.asarray(s)[10:]) <= 0)
    wd = warmup_cosine(0.04, 0.04, 0.4, 101, 0)
    assert (wd[0], wd[50], wd[100]) == pytest.approx((0.04, 0.22, 0.4))


def test_warmup_cosine_freeze():
    s = warmup_cosine(0.1, 1.0, 0.0, total_steps=20, warmup_steps=4, freeze_steps=5)
    assert [s[i] for i in range(5)] == [0.0] * 5
    assert s[5] == pytest.approx(0.1)
    assert s[9] == pytest.approx(1.0)


def test_warmup_constant_v2():
    lr = warmup_constant(0.0, 5e-5, None, total_steps=200, warmup_steps=100)
    assert lr[50] == pytest.approx(2.5e-5)
    assert lr[100] == lr[150] == lr[199] == pytest.approx(5e-5)
    # Gram weight of the 7B recipe, scaled down: 0 for 10 steps, cosine to 2 over 11, then 2.
    gram = warmup_constant(0.0, 0.0, 2.0, total_steps=30, warmup_steps=10, cosine_steps=11)
    assert gram[9] == 0.0 and gram[10] == 0.0
    assert gram[15] == pytest.approx(1.0)
    assert gram[20] == gram[29] == pytest.approx(2.0)
    temp = warmup_constant(0.04, 0.07, 0.07, 100, 30)
    assert (temp[0], temp[15], temp[30], temp[99]) == pytest.approx((0.04, 0.055, 0.07, 0.07))


def test_lr_scaling_and_errors():
    assert lr_scaling(1e-3, 1024) == pytest.approx(4e-3)
    assert lr_scaling(1e-3, 256) == pytest.approx(2e-3)
    assert lr_scaling(5e-5, 4096) == pytest.approx(4e-4)  # the 7B figure in the spec
    assert lr_scaling(1e-3, 512, "linear_wrt_256") == pytest.approx(2e-3)
    assert lr_scaling(1e-3, 512, "none") == 1e-3
    with pytest.raises(ConfigError):
        lr_scaling(1e-3, 512, "cubic")
    with pytest.raises(ConfigError):
        warmup_cosine(0, 1, 0, total_steps=5, warmup_steps=6)
    with pytest.raises(ConfigError):
        warmup_constant(0, 1, 0, total_steps=0, warmup_steps=0)
