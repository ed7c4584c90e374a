"""2 gloo CPU ranks vs 1 process through Lightning's full SSL step: FSDP2 and DDP.

Runs the harness of tests/ssl/lightning_ranks.py (tiny ViT, DINO and iBOT heads, EMA and Gram
teachers, distributed KoLeo, clipping active, 4 steps on real Sentinel-2 multi-crops, global batch
8) on 2 CPU processes and in one process, and prints the largest differences. The tests assert
tolerances on the same runs (tests/ssl/test_distributed_step.py); this prints the figures.

    python bench/distributed_equality.py
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from tempfile import TemporaryDirectory

import torch
import torch.multiprocessing as mp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.ssl import lightning_ranks as h  # noqa: E402


def main() -> None:
    """Train both ways and print the differences."""
    with TemporaryDirectory() as tmp:
        out = Path(tmp)
        batches = h.global_batches(ROOT.parent / "shared" / "data")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        runs = [("fsdp", "fsdp", {"max_steps": h.STEPS}), ("ddp", "ddp", {"max_steps": h.STEPS})]
        mp.spawn(h.worker, args=(port, batches, str(out), runs), nprocs=h.WORLD, join=True)
        single = h.fit("single", batches, out / "single", h.STEPS)
        rank0 = torch.load(out / "rank0.pt", weights_only=False)
    for name in ("fsdp", "ddp"):
        a, b = single["state"], rank0[name]["state"]
        param = max(float((a[k].float() - b[k].float()).abs().max()) for k in a if a[k].numel())
        loss = max(abs(x - y) for x, y in zip(single["losses"], rank0[name]["losses"], strict=True))
        norm = max(
            abs(m[k] - s[k]) / s[k]
            for m, s in zip(rank0[name]["norms"], single["norms"], strict=True)
            for k in s
        )
        local, total = rank0[name]["numel"]
        print(
            f"{name}: max |parameter difference| {param:.2e}, max |loss difference| {loss:.2e}, "
            f"max relative gradient-norm difference {norm:.2e}, rank 0 holds {local:,} of "
            f"{total:,} values"
        )


if __name__ == "__main__":
    main()
