"""The heads benchmark's table (mean ± std over seeds) and its agreement statistic."""

import numpy as np
import pytest

from bench.heads.rufiji import agreement
from bench.heads.table import markdown, summarise, verdicts


def _rows():
    rows = []
    for seed, (p, r) in enumerate([(0.80, 0.70), (0.82, 0.71), (0.84, 0.72)]):
        rows.append({"task": "T", "method": "pretrained", "seed": seed, "miou": p, "accuracy": 0.9})
        rows.append(
            {"task": "T", "method": "random init", "seed": seed, "miou": r, "accuracy": 0.8}
        )
        rows.append(
            {"task": "T", "method": "per-pixel x", "seed": seed, "miou": 0.75, "accuracy": 0.85}
        )
    return rows


def test_mean_and_sample_std_over_seeds():
    (pre, ran, base) = summarise(_rows())
    assert pre["seeds"] == [0, 1, 2] and list(pre["stats"]) == ["miou", "accuracy"]
    assert pre["stats"]["miou"] == pytest.approx((0.82, 0.02))  # sample std (ddof 1)
    assert ran["stats"]["miou"] == pytest.approx((0.71, 0.01))
    assert base["stats"]["miou"] == pytest.approx((0.75, 0.0))
    assert "| T | pretrained | 0,1,2 | miou 0.820 ± 0.020, accuracy 0.900 ± 0.000 |" in markdown(
        _rows()
    )
    text = verdicts(_rows(), "pretrained", "random init")
    assert "pretrained wins (by more than the seeds' std)" in text
    assert "pretrained >=, random <" in text


def test_agreement_is_cohens_kappa():
    lc_a = np.array([[0, 0], [1, 1]])
    lc_b = np.array([[0, 1], [1, 0]])  # flips at (0, 1) and (1, 1)
    ok = np.ones((2, 2), bool)
    same = agreement(lc_a, lc_b, lc_a != lc_b, ok)
    assert same["kappa"] == pytest.approx(1.0) and same["P(change|flip)"] == 1.0
    opposite = agreement(lc_a, lc_b, lc_a == lc_b, ok)
    assert opposite["kappa"] == pytest.approx(-1.0)


def test_wide_table_puts_the_three_methods_side_by_side():
    from bench.heads.table import wide

    line = wide(_rows(), "pretrained", "random init").splitlines()[-1]
    assert line == (
        "| T | miou 0.750 ± 0.000, accuracy 0.850 ± 0.000 | miou 0.820 ± 0.020, accuracy "
        "0.900 ± 0.000 | miou 0.710 ± 0.010, accuracy 0.800 ± 0.000 |"
    )


def test_a_loss_beyond_the_std_is_said_so():
    """A loss larger than both std was printed 'within the seeds' std' (the sign was kept)."""
    swapped = [
        {
            **r,
            "method": {"pretrained": "random init", "random init": "pretrained"}.get(
                r["method"], r["method"]
            ),
        }
        for r in _rows()
    ]
    text = verdicts(swapped, "pretrained", "random init")
    assert "pretrained loses (by more than the seeds' std)" in text
