"""Exact mid-epoch resume and the SIGTERM (preemption) checkpoint of `dinogeo pretrain`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from dinogeo.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "configs" / "ssl" / "default.yaml"
S2_10M = "sentinel2-l1c-virginia-sattestdata/S2_18SVG_20160112_10m_B02-B03-B04-B08_crop.tif"


def args_for(shared: Path, run_dir: Path, steps: int, every: int) -> list[str]:
    callbacks = [
        {
            "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
            "init_args": {
                "dirpath": str(run_dir / "checkpoints"),
                "save_last": True,
                "save_top_k": 0,
                "every_n_train_steps": every,
            },
        }
    ]
    return [
        "pretrain",
        "--config",
        str(DEFAULT),
        "--trainer.default_root_dir",
        str(run_dir),
        "--trainer.logger",
        "false",
        "--trainer.callbacks",
        json.dumps(callbacks),
        "--trainer.max_steps",
        str(steps),
        "--trainer.enable_progress_bar",
        "false",
        "--model.optim.schedule_steps",
        "6",
        "--model.export_path",
        "null",
        "--model.dino_head.out_dim",
        "64",
        "--model.ibot_head.out_dim",
        "64",
        "--data.sources",
        f"[{shared / S2_10M}]",
        "--data.sensor",
        "sentinel2_l1c",
        "--data.bands",
        "[B02, B03, B04, B08]",
        "--data.batch_size",
        "4",
        "--data.samples_per_epoch",
        "16",
        "--data.num_workers",
        "0",
        "--data.global_size",
        "32",
        "--data.local_size",
        "16",
        "--data.n_local",
        "2",
        "--data.chip_size",
        "48",
    ]


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def test_interrupted_run_resumes_exactly(shared_data, tmp_path):
    """6 steps straight == 3 steps (mid-epoch: 4 batches per epoch) + resume to 6."""
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert main(args_for(shared_data, straight, 6, 3)) == 0
    assert main(args_for(shared_data, split, 3, 3)) == 0
    first = split / "checkpoints" / "last.ckpt"
    assert torch.load(first, weights_only=True)["global_step"] == 3
    initial = weights(first)
    resumed = args_for(shared_data, split, 6, 3) + ["--ckpt_path", str(first)]
    assert main(resumed) == 0
    a = weights(straight / "checkpoints" / "last.ckpt")
    b = weights(split / "checkpoints" / "last.ckpt")
    assert a.keys() == b.keys()
    moved = 0
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=0, msg=key)
        moved += int(not torch.equal(a[key], initial[key]))
    assert moved > 10  # steps 4-6 changed the weights


def test_sigterm_saves_a_checkpoint_and_resumes(shared_data, tmp_path):
    run_dir = tmp_path / "run"
    args = args_for(shared_data, run_dir, 500, 1)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "dinogeo.cli.main", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=tmp_path,
    )
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 240
    while not ckpt.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert ckpt.exists(), proc.communicate()[0].decode()[-3000:]
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, out.decode()[-3000:]
    assert b"SIGTERM" in out
    state = torch.load(ckpt, weights_only=True)
    step = state["global_step"]
    assert 1 <= step < 500
    assert state["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]["completed"] >= 1
    resumed = args_for(shared_data, run_dir, step + 2, 1) + ["--ckpt_path", "last"]
    assert main(resumed) == 0
    assert torch.load(ckpt, weights_only=True)["global_step"] == step + 2
