"""The SSL losses stay fp32 under bf16 autocast (CPU autocast casts matmul/einsum like CUDA)."""

from __future__ import annotations

import torch

from dinogeo.ssl.dino_loss import DINOLoss
from dinogeo.ssl.gram_loss import gram_loss
from dinogeo.ssl.koleo_loss import koleo_loss


def _under_bf16(fn):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return fn()


def test_dino_loss_is_fp32_under_autocast():
    gen = torch.Generator().manual_seed(0)
    k = 4096
    student = torch.randn(2, 8, k, generator=gen)
    local = torch.randn(4, 8, k, generator=gen)
    teacher = torch.softmax(torch.randn(2, 8, k, generator=gen) / 0.04, dim=-1)
    loss = DINOLoss(k)
    ref = loss(student, local, teacher)
    got = _under_bf16(lambda: loss(student, local, teacher))
    for key, value in ref.items():
        # a bf16 einsum puts the ~8.3 loss on a 0.03 grid; fp32 agrees to rounding
        assert got[key].dtype == torch.float32
        torch.testing.assert_close(got[key], value, rtol=1e-6, atol=1e-6)


def test_gram_loss_is_fp32_under_autocast():
    gen = torch.Generator().manual_seed(0)
    student = torch.randn(2, 64, 48, generator=gen)
    teacher = student + 0.01 * torch.randn(2, 64, 48, generator=gen)
    ref = gram_loss(student, teacher)
    got = _under_bf16(lambda: gram_loss(student, teacher))
    # the Gram differences (~1e-4) are below bf16's resolution of a similarity (~4e-3)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-9)


def test_koleo_neighbours_are_fp32_under_autocast():
    # row 0's neighbours at angles 0.06 (row 1) and 0.05 (row 2): cosines 0.9982 and 0.99875
    # both round to 1.0 in bf16, so a bf16 search takes row 1, the farther one
    e = torch.eye(8)
    x = torch.stack([e[0], e[0] + 0.06 * e[1], e[0] + 0.05 * e[2], e[3], e[4], e[5]])
    ref = koleo_loss(x)
    got = _under_bf16(lambda: koleo_loss(x))
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
