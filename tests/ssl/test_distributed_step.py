"""Lightning's full SSL step on 2 gloo ranks equals 1 process: FSDP2 and DDP, and FSDP's resume.

One spawn of two processes trains the real task (student, EMA teacher, Gram teacher from the EMA
at start and refreshed at step 3, DINO and iBOT heads, distributed KoLeo, clipping active every
step, learning rate scaled by the global batch) for 4 steps on real Sentinel-2 multi-crops with
``SSLFSDPStrategy`` (checkpoints sharded every 2 steps), resumes the sharded step-2 checkpoint
to step 4, and trains the same 4 steps with DDP. The single-process reference takes the whole
global batch each step (tests/ssl/lightning_ranks.py).
"""

from __future__ import annotations

import socket

import pytest
import torch
import torch.multiprocessing as mp

from tests.ssl import lightning_ranks as lr

pytestmark = pytest.mark.distributed


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def runs(tmp_path_factory, shared_data):
    tmp = tmp_path_factory.mktemp("ssl_ranks")
    batches = lr.global_batches(shared_data)
    plan = [
        ("fsdp", "fsdp", {"max_steps": lr.STEPS, "ckpt_every": 2}),
        ("fsdp_resumed", "fsdp", {"max_steps": lr.STEPS, "ckpt_path": str(tmp / "fsdp" / "step=2.ckpt")}),
        ("ddp", "ddp", {"max_steps": lr.STEPS}),
    ]  # fmt: skip
    mp.spawn(lr.worker, args=(free_port(), batches, str(tmp), plan), nprocs=lr.WORLD, join=True)
    ranks = [torch.load(tmp / f"rank{r}.pt", weights_only=False) for r in range(lr.WORLD)]
    single = lr.fit("single", batches, tmp / "single", lr.STEPS)
    return {"single": single, "ranks": ranks, "dir": tmp}


def assert_same_training(run: dict, single: dict, atol: float) -> None:
    # the learning rate is scaled by the global batch: 2 ranks x 4 = 1 process x 8
    assert run["global_batch"] == single["global_batch"] == lr.GLOBAL_BATCH
    assert run["lr"] == single["lr"] > 0
    assert len(run["losses"]) == lr.STEPS
    torch.testing.assert_close(run["losses"], single["losses"], atol=atol, rtol=1e-5)
    assert run["state"].keys() == single["state"].keys()
    for key, value in single["state"].items():
        torch.testing.assert_close(run["state"][key], value, atol=atol, rtol=1e-4, msg=key)


def test_fsdp_two_ranks_equal_one_process(runs):
    single, rank0 = runs["single"], runs["ranks"][0]["fsdp"]
    assert_same_training(rank0, single, atol=2e-6)
    # the run learned: the student moved, the teacher followed, the Gram teacher was refreshed
    state = rank0["state"]
    assert int(state["gram_teacher.num_updates"]) == 1
    assert single["losses"][-1] < single["losses"][0]


def test_fsdp_really_shards(runs):
    """Each rank holds about half of every backbone and head (DTensor shards)."""
    for rank in runs["ranks"]:
        local, total = rank["fsdp"]["numel"]
        assert 0.45 * total <= local <= 0.55 * total, (local, total)
    assert runs["single"]["numel"][0] == runs["single"]["numel"][1]


def test_fsdp_clipping_uses_the_global_norm(runs):
    """Clipping is active each step (threshold 0.05); both ranks see the 1-process norms."""
    single = runs["single"]["norms"]
    a, b = (rank["fsdp"]["norms"] for rank in runs["ranks"])
    assert len(single) == lr.STEPS and set(single[0]) == {
        "grad_norm/backbone", "grad_norm/dino_head", "grad_norm/ibot_head",
    }  # fmt: skip
    assert a == b  # bit-identical on every rank: one all-reduced norm
    for mine, ref in zip(a, single, strict=True):
        for key, value in ref.items():
            assert value > 0.05
            assert mine[key] == pytest.approx(value, rel=1e-5), key


def test_fsdp_sharded_checkpoint_resumes_exactly(runs):
    ckpt = runs["dir"] / "fsdp" / "step=2.ckpt"
    assert ckpt.is_dir() and len(list(ckpt.glob("*.distcp"))) == lr.WORLD  # one shard file per rank
    straight, resumed = runs["ranks"][0]["fsdp"], runs["ranks"][0]["fsdp_resumed"]
    assert len(resumed["losses"]) == lr.STEPS - 2
    assert resumed["losses"] == straight["losses"][2:]
    for key, value in straight["state"].items():
        torch.testing.assert_close(resumed["state"][key], value, atol=0, rtol=0, msg=key)


def test_ddp_two_ranks_equal_one_process(runs):
    single = runs["single"]
    for rank in runs["ranks"]:
        assert_same_training(rank["ddp"], single, atol=2e-6)
        for mine, ref in zip(rank["ddp"]["norms"], single["norms"], strict=True):
            assert mine == pytest.approx(ref, rel=1e-5)
