import math

import pytest
import torch

from dinogeo.errors import ConfigError
from dinogeo.ssl.sinkhorn import sinkhorn_knopp


def test_rows_sum_to_one_and_prototype_marginals_balance():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(32, 8, generator=g)
    q = sinkhorn_knopp(scores, teacher_temp=0.5, n_iterations=3)
    assert q.shape == (32, 8)
    torch.testing.assert_close(q.sum(dim=1), torch.ones(32))
    # Column (prototype) sums approach B/K; after many rounds they are exact.
    assert (q.sum(dim=0) - 32 / 8).abs().max() < 0.25 * 32 / 8
    q_many = sinkhorn_knopp(scores, teacher_temp=0.5, n_iterations=200)
    torch.testing.assert_close(q_many.sum(dim=0), torch.full((8,), 4.0), atol=1e-3, rtol=0)
    # More iterations balance better than none.
    q0 = sinkhorn_knopp(scores, teacher_temp=0.5, n_iterations=0)
    assert (q.sum(0) - 4).abs().max() < (q0.sum(0) - 4).abs().max()


def test_two_by_two_by_hand():
    # z = [[1, 0], [0, 0]], T = 1, one iteration.
    # Q^T = [[e, 1], [1, 1]] / (e + 3); prototype rows -> [e, 1]/(e + 1) and [1, 1]/2, /K;
    # then each sample's column is normalised to 1 (the /B and *B cancel).
    e = math.e
    a, b = e / (2 * (e + 1)), 1 / (2 * (e + 1))
    expected = torch.tensor(
        [[a / (a + 0.25), 0.25 / (a + 0.25)], [b / (b + 0.25), 0.25 / (b + 0.25)]]
    )
    q = sinkhorn_knopp(torch.tensor([[1.0, 0.0], [0.0, 0.0]]), teacher_temp=1.0, n_iterations=1)
    torch.testing.assert_close(q, expected)


def test_uniform_scores_give_uniform_assignments():
    q = sinkhorn_knopp(torch.zeros(6, 5), teacher_temp=0.07)
    torch.testing.assert_close(q, torch.full((6, 5), 0.2))


def test_large_scores_are_stable_and_shift_invariant():
    g = torch.Generator().manual_seed(1)
    scores = torch.randn(16, 10, generator=g)
    q_ref = sinkhorn_knopp(scores, teacher_temp=0.04)
    q_big = sinkhorn_knopp(scores + 100.0, teacher_temp=0.04)  # exp(2500) overflows naively
    assert torch.isfinite(q_big).all()
    # (+100 costs fp32 precision in the scores themselves, hence the tolerance)
    torch.testing.assert_close(q_big, q_ref, atol=1e-4, rtol=1e-3)
    # bf16 input is computed in fp32
    assert sinkhorn_knopp(scores.bfloat16(), 0.07).dtype == torch.float32


def test_n_samples_matches_default_and_validation():
    scores = torch.randn(12, 4)
    torch.testing.assert_close(
        sinkhorn_knopp(scores, 0.1, n_samples=12), sinkhorn_knopp(scores, 0.1)
    )
    torch.testing.assert_close(
        sinkhorn_knopp(scores, 0.1, n_samples=torch.tensor(12)), sinkhorn_knopp(scores, 0.1)
    )
    with pytest.raises(ConfigError):
        sinkhorn_knopp(torch.randn(2, 3, 4), 0.1)
    with pytest.raises(ConfigError):
        sinkhorn_knopp(scores, 0.0)


def test_empty_input_for_ranks_without_masked_patches():
    q = sinkhorn_knopp(torch.zeros(0, 7), teacher_temp=0.07)
    assert q.shape == (0, 7)
