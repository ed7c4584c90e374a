"""Two-process CPU (gloo) checks: the distributed statistics reproduce the single-process values."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dinogeo.errors import ConfigError
from dinogeo.ssl.dino_loss import DINOLoss
from dinogeo.ssl.gram_loss import gram_loss
from dinogeo.ssl.ibot_loss import iBOTPatchLoss
from dinogeo.ssl.koleo_loss import koleo_group_ranks, koleo_loss, koleo_loss_distributed
from dinogeo.ssl.sinkhorn import sinkhorn_knopp

pytestmark = pytest.mark.distributed

WORLD = 2
N_G, N_L, B, K, D, P = 2, 3, 8, 16, 6, 4  # global batch B split into B/WORLD per rank
T_TEACHER = 0.06


def make_data():
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(N_G * B, P, generator=g) < 0.4
    masks[:, 0] = True  # every image has at least one masked patch on both ranks
    return {
        "s_global": torch.randn(N_G, B, K, generator=g),
        "s_local": torch.randn(N_L, B, K, generator=g),
        "t_global": torch.randn(N_G, B, K, generator=g),
        "cls": torch.randn(N_G, B, D, generator=g),
        "s_patch": torch.randn(N_G * B, P, K, generator=g),
        "t_patch": torch.randn(N_G * B, P, K, generator=g),
        "s_tokens": torch.randn(N_G * B, P, D, generator=g),
        "t_tokens": torch.randn(N_G * B, P, D, generator=g),
        "masks": masks,
    }


def select_rank(data, rank, world):
    """Rank ``rank``'s share: images [rank*b, (rank+1)*b) of every crop (crop-major layout)."""
    b = B // world
    out = {}
    for key, x in data.items():
        if key in ("s_global", "s_local", "t_global", "cls"):
            out[key] = x[:, rank * b : (rank + 1) * b].clone()
        else:  # (N_G * B, ...) crop-major
            out[key] = (
                x.view(N_G, B, *x.shape[1:])[:, rank * b : (rank + 1) * b]
                .reshape(N_G * b, *x.shape[1:])
                .clone()
            )
    return out


def total_loss(d, distributed):
    """DINO + iBOT + 0.1 * KoLeo + Gram, as the SSL module combines them."""
    n_img = d["s_global"].shape[1]
    teacher = sinkhorn_knopp(d["t_global"].flatten(0, 1), T_TEACHER).view(N_G, n_img, K)
    dino = DINOLoss(K)(d["s_global"], d["s_local"], teacher)["dino"]
    masks = d["masks"]
    n_masked = torch.tensor(float(masks.sum()))
    if distributed:
        dist.all_reduce(n_masked)
    t_masked = sinkhorn_knopp(d["t_patch"][masks], T_TEACHER, n_samples=n_masked)
    weight = (1.0 / masks.sum(-1, keepdim=True).clamp(min=1).float()).expand_as(masks)[masks]
    ibot = iBOTPatchLoss(K)(d["s_patch"][masks], t_masked, weight, masks.shape[0])
    koleo_fn = koleo_loss_distributed if distributed else koleo_loss
    koleo = sum(koleo_fn(d["cls"][i]) for i in range(N_G))
    gram = gram_loss(d["s_tokens"], d["t_tokens"])
    return dino + ibot + 0.1 * koleo + gram


def worker(rank, world, init_file, data, out_dir):
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        local = select_rank(data, rank, world)
        res = {}
        res["sk"] = sinkhorn_knopp(local["t_global"].flatten(0, 1), T_TEACHER)
        x = local["cls"][0].clone().requires_grad_(True)
        koleo = koleo_loss_distributed(x)
        koleo.backward()
        res["koleo"], res["koleo_grad"] = koleo.detach(), x.grad
        # groups counted in samples (the recipe's koleo_distributed_loss_group_size)
        res["koleo_group1"] = koleo_loss_distributed(local["cls"][0], group_size=B // world)
        res["koleo_group_all"] = koleo_loss_distributed(local["cls"][0], group_size=B)
        for key in ("s_global", "s_local", "cls", "s_patch", "s_tokens"):
            local[key].requires_grad_(True)
        loss = total_loss(local, distributed=True)
        loss.backward()
        res["total"] = loss.detach()
        res["grads"] = {
            k: local[k].grad for k in ("s_global", "s_local", "cls", "s_patch", "s_tokens")
        }
        torch.save(res, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gloo")
    data = make_data()
    # spawn (not fork): forking a process whose OpenMP pool is running can hang the workers
    mp.spawn(worker, args=(WORLD, str(tmp / "rendezvous"), data, str(tmp)), nprocs=WORLD, join=True)
    return data, [torch.load(tmp / f"rank{r}.pt") for r in range(WORLD)]


def test_sinkhorn_matches_single_process(results):
    data, ranks = results
    single = sinkhorn_knopp(data["t_global"].flatten(0, 1), T_TEACHER).view(N_G, B, K)
    b = B // WORLD
    for r, res in enumerate(ranks):
        torch.testing.assert_close(res["sk"].view(N_G, b, K), single[:, r * b : (r + 1) * b])
    # and differs from a per-rank (local statistics) Sinkhorn-Knopp
    local_only = sinkhorn_knopp(select_rank(data, 0, WORLD)["t_global"].flatten(0, 1), T_TEACHER)
    assert not torch.allclose(local_only, ranks[0]["sk"], atol=1e-4)


def test_koleo_distributed_matches_single_process(results):
    data, ranks = results
    x = data["cls"][0].clone().requires_grad_(True)
    single = koleo_loss(x)
    single.backward()
    mean = sum(res["koleo"] for res in ranks) / WORLD
    torch.testing.assert_close(mean, single.detach())
    # DDP averages gradients over ranks: the per-rank gradients / WORLD are the global ones
    b = B // WORLD
    for r, res in enumerate(ranks):
        torch.testing.assert_close(res["koleo_grad"] / WORLD, x.grad[r * b : (r + 1) * b])
    # a group of one rank's samples searches that rank's own rows only
    torch.testing.assert_close(
        ranks[1]["koleo_group1"], koleo_loss(select_rank(data, 1, WORLD)["cls"][0])
    )
    # a group of all B samples is the whole batch
    for res in ranks:
        torch.testing.assert_close(res["koleo_group_all"], res["koleo"])


def test_koleo_group_counted_in_samples():
    """16 samples with 8 per rank is 2 ranks (the recipe's 7B high-resolution stage)."""
    assert koleo_group_ranks(16, 8, 4) == 2
    assert koleo_group_ranks(32, 8, 4) == 4
    assert koleo_group_ranks(None, 8, 4) == 4
    with pytest.raises(ConfigError, match="multiple of the per-rank batch"):
        koleo_group_ranks(4, 8, 4)  # half a rank
    with pytest.raises(ConfigError, match="does not divide"):
        koleo_group_ranks(24, 8, 4)  # 3 ranks in a world of 4


def test_total_loss_and_gradients_match_single_process(results):
    data, ranks = results
    single_in = {k: v.clone() for k, v in data.items()}
    for key in ("s_global", "s_local", "cls", "s_patch", "s_tokens"):
        single_in[key].requires_grad_(True)
    single = total_loss(single_in, distributed=False)
    single.backward()
    torch.testing.assert_close(sum(res["total"] for res in ranks) / WORLD, single.detach())
    for key in ("s_global", "s_local", "cls", "s_patch", "s_tokens"):
        full_grad = {"g": single_in[key].grad}
        for r, res in enumerate(ranks):
            expected = (
                select_rank({key: full_grad["g"]}, r, WORLD)[key]
                if key in ("s_patch", "s_tokens")
                else full_grad["g"][:, r * (B // WORLD) : (r + 1) * (B // WORLD)]
            )
            torch.testing.assert_close(
                res["grads"][key] / WORLD, expected, msg=f"gradient of {key}, rank {r}"
            )
