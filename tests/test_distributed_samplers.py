"""Two processes (gloo): disjoint shards, set_epoch, determinism, and Lightning DDP keeps our sampler."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as tmp

pytestmark = pytest.mark.distributed

RUFIJI = "sentinel2-timeseries-rufiji-rsgislib"
FILES = [
    "landsat7-rgb-bahamas-rasterio/RGB.byte.tif",
    "drone-ortho-pix4d-riotiler/pix4d_alpha_nodata.tif",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, shared: str, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        WORLD_SIZE=str(world),
        RANK=str(rank),
        LOCAL_RANK=str(rank),  # Lightning then treats the processes as externally launched
        NODE_RANK="0",
    )
    torch.set_num_threads(1)
    import lightning.pytorch as pl

    from dinogeo.data.dataset import ChipDataset, dataloader
    from dinogeo.data.opener import open_source
    from dinogeo.data.samplers import GridChipSampler, RandomChipSampler

    sources = [open_source(Path(shared) / f, "rgb_uint8") for f in FILES]
    dist.init_process_group("gloo", rank=rank, world_size=world)
    result: dict = {}
    # no rank/world given: both come from torch.distributed
    rnd = RandomChipSampler(sources, 48, length=21, seed=7)
    result["random"] = [[list(q) for q in rnd]]
    rnd.set_epoch(1)
    result["random"].append([list(q) for q in rnd])
    grid = GridChipSampler(sources, 128, 96)
    result["grid"] = [list(q) for q in grid]
    result["n_grid"] = len(grid.chips)

    class Recorder(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(3, 1)
            self.seen: dict[int, list] = {}

        def training_step(self, batch, _):
            chips = [
                [p, round(b[0], 3), round(b[3], 3)] for p, b in zip(batch["path"], batch["bounds"])
            ]
            self.seen.setdefault(self.current_epoch, []).extend(chips)
            return self.lin(batch["image"].mean(dim=(2, 3))).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    sampler = RandomChipSampler(sources, 32, length=16, seed=3)
    loader = dataloader(ChipDataset(sources, min_valid=0.5), sampler, batch_size=4)
    model = Recorder()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=world,
        strategy="ddp",
        max_epochs=2,
        use_distributed_sampler=True,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, loader)
    result["lightning_sampler_kept"] = trainer.train_dataloader.sampler is sampler
    result["lightning_seen"] = {str(k): v for k, v in model.seen.items()}
    expected = {}
    for epoch in range(2):
        sampler.set_epoch(epoch)
        ds = ChipDataset(sources, min_valid=0.5)
        chips = []
        for q in sampler:
            s = ds[q]
            chips.append([s["path"], round(s["bounds"][0], 3), round(s["bounds"][3], 3)])
        expected[str(epoch)] = chips
    result["lightning_expected"] = expected
    Path(out, f"rank{rank}.json").write_text(json.dumps(result))
    if dist.is_initialized():
        dist.destroy_process_group()


def test_two_ranks_gloo(shared_data, tmp_path):
    tmp.spawn(_worker, args=(2, _free_port(), str(shared_data), str(tmp_path)), nprocs=2, join=True)
    r = [json.loads((tmp_path / f"rank{i}.json").read_text()) for i in range(2)]

    from dinogeo.data.opener import open_source
    from dinogeo.data.samplers import RandomChipSampler

    sources = [open_source(shared_data / f, "rgb_uint8") for f in FILES]
    for epoch in range(2):
        a, b = (tuple(map(tuple, r[i]["random"][epoch])) for i in range(2))
        assert len(a) == len(b) == 11  # 21 chips over 2 ranks: equal shards (one repeat pads)
        ref = RandomChipSampler(sources, 48, length=21, seed=7)
        ref.set_epoch(epoch)
        glob = [tuple(q) for q in ref]
        assert sorted(set(a) | set(b)) == sorted(set(glob))  # together they cover the epoch
        assert len(set(a) & set(b)) <= 1  # disjoint but for the padding repeat
        assert list(a) == glob[0::2] and list(b) == (glob + glob[:1])[1::2]  # deterministic
    assert r[0]["random"][0] != r[0]["random"][1]  # set_epoch changes the chips
    g0, g1 = ({tuple(q) for q in r[i]["grid"]} for i in range(2))
    assert len(r[0]["grid"]) == len(r[1]["grid"])
    assert len(g0 | g1) == r[0]["n_grid"]
    for i in range(2):
        assert r[i]["lightning_sampler_kept"]
        assert r[i]["lightning_seen"] == r[i]["lightning_expected"]  # incl. set_epoch per epoch
    assert r[0]["lightning_seen"]["0"] != r[1]["lightning_seen"]["0"]
    assert r[0]["lightning_seen"]["0"] != r[0]["lightning_seen"]["1"]
