"""End-to-end tests of `dinogeo pretrain` on real imagery, one per shipped config."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
import yaml

from dinogeo.cli.main import main
from dinogeo.models import load_backbone
from dinogeo.ssl.crop_mix import CropMix
from dinogeo.ssl.datamodule import SSLDataModule
from dinogeo.ssl.module import SSLTask
from dinogeo.ssl.pretrain import PretrainCLI

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "ssl"
S2_10M = "sentinel2-l1c-virginia-sattestdata/S2_18SVG_20160112_10m_B02-B03-B04-B08_crop.tif"
ABER = "sentinel2-landcover-aberystwyth-rsgislib/sen2_20210527_aber_10band_crop.tif"
ABER_BANDS = "[B02, B03, B04, B05, B06, B07, B08, B8A, B11, B12]"


def parse_default(*args: str) -> PretrainCLI:
    """``dinogeo pretrain --config configs/ssl/default.yaml ARGS`` parsed and set up, not run."""
    default = ["--config", str(CONFIGS / "default.yaml")]
    return PretrainCLI(SSLTask, SSLDataModule, run=False, args=[*default, *args])


def tiny(shared: Path, steps: int, *, gram: bool = False) -> list[str]:
    """Overrides that shrink any config to a few CPU seconds on the 4-band Sentinel-2 scene."""
    args = [
        "--trainer.accelerator",
        "cpu",
        "--trainer.devices",
        "1",
        "--trainer.max_steps",
        str(steps),
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.log_every_n_steps",
        "1",
        "--model.arch",
        "vit_test_patch16_dinov3",
        "--model.img_size",
        "32",
        "--model.drop_path_rate",
        "0.0",
        "--model.dino_head.out_dim",
        "64",
        "--model.dino_head.hidden_dim",
        "32",
        "--model.dino_head.bottleneck_dim",
        "16",
        "--model.ibot_head.out_dim",
        "64",
        "--model.ibot_head.hidden_dim",
        "32",
        "--model.ibot_head.bottleneck_dim",
        "16",
        "--data.index",
        "null",
        "--data.sources",
        f"[{shared / S2_10M}]",
        "--data.sensor",
        "sentinel2_l1c",
        "--data.bands",
        "[B02, B03, B04, B08]",
        "--data.batch_size",
        "4",
        "--data.num_workers",
        "0",
        "--data.samples_per_epoch",
        "16",
        "--data.global_size",
        "32",
        "--data.local_size",
        "16",
        "--data.n_local",
        "2",
        "--data.gram_size",
        "64" if gram else "null",
        "--data.chip_size",
        "64",
    ]
    return args


def metrics(root: Path) -> list[dict[str, str]]:
    files = sorted(root.rglob("metrics.csv"))
    assert files, f"no CSV log under {root}"
    with files[-1].open() as fh:
        return list(csv.DictReader(fh))


def series(rows: list[dict[str, str]], key: str) -> list[float]:
    return [float(r[key]) for r in rows if r.get(key)]


def test_default_config_learns_on_real_imagery(shared_data, tmp_path, monkeypatch):
    """The tiny default config on a real Sentinel-2 scene: losses fall, no collapse, export."""
    monkeypatch.chdir(tmp_path)
    args = [
        "pretrain",
        "--config",
        str(CONFIGS / "default.yaml"),
        "--data.sources",
        f"[{shared_data / S2_10M}]",
        "--data.sensor",
        "sentinel2_l1c",
        "--data.bands",
        "[B02, B03, B04, B08]",
        "--trainer.max_steps",
        "24",
        "--data.samples_per_epoch",
        "64",
        "--trainer.enable_progress_bar",
        "false",
    ]
    assert main(args) == 0
    rows = metrics(tmp_path / "runs" / "ssl_default")
    dino = series(rows, "loss/dino")
    koleo = series(rows, "loss/koleo")
    std = series(rows, "health/embedding_std")
    assert len(dino) == 24
    assert sum(dino[-3:]) / 3 < sum(dino[:3]) / 3
    assert dino[-1] < dino[0]
    assert koleo[-1] < 0.5 * koleo[0]
    assert std[-1] > 10 * std[0]  # features spread out from the collapsed random start
    assert max(series(rows, "health/collapse")) == 0.0
    for key in ("loss/ibot", "health/teacher_entropy", "health/mean_cosine", "sched/lr"):
        assert series(rows, key), key
    assert list((tmp_path / "runs" / "ssl_default" / "tensorboard").rglob("events.out.tfevents*"))
    backbone, card = load_backbone(tmp_path / "runs" / "ssl_default" / "backbone.safetensors")
    assert card.band_names == ["B02", "B03", "B04", "B08"]
    assert card.sensor == "sentinel2_l1c" and card.config_hash
    assert card.training_config["model"]["arch"] == "vit_test_patch16_dinov3"
    assert backbone.in_chans == 4


@pytest.mark.parametrize(
    "name, extra",
    [
        (
            "pretrain.yaml",
            [
                "--data.sources",
                "ABER",
                "--data.sensor",
                "sentinel2_l2a",
                "--data.bands",
                ABER_BANDS,
                "--data.scale",
                "1e-3",
                "--data.offset",
                "0",
            ],
        ),
        (
            "high_res.yaml",
            [
                "--data.crop_mix",
                "[{global_size: 32, local_size: 16, gram_size: 48, weight: 0.5}, "
                "{global_size: 48, local_size: 16, gram_size: 64, weight: 0.5}]",
                "--data.chip_size",
                "64",
                "--model.optim.stage_start_step",
                "0",
            ],
        ),
    ],
)
def test_stage_configs_run(shared_data, tmp_path, monkeypatch, name, extra):
    monkeypatch.chdir(tmp_path)
    configs = ["--config", str(CONFIGS / "pretrain.yaml")]
    if name != "pretrain.yaml":
        configs += ["--config", str(CONFIGS / "gram_anchor.yaml"), "--config", str(CONFIGS / name)]
    extra = [str(shared_data / ABER) if e == "ABER" else e for e in extra]
    extra = [f"[{e}]" if e.endswith(".tif") else e for e in extra]
    args = ["pretrain", *configs, *tiny(shared_data, 2, gram=name != "pretrain.yaml"), *extra]
    args += ["--data.batch_size", "2", "--model.optim.schedule_steps", "10"]
    assert main(args) == 0
    rows = metrics(tmp_path / "runs" / "pretrain")
    assert len(series(rows, "loss/total")) == 2
    if name == "high_res.yaml":
        assert series(rows, "loss/gram")  # fixed Gram teacher taken from the EMA teacher
        # the shipped mix is the recipe's five resolutions; the tiny override's two both ran
        shipped = yaml.safe_load((CONFIGS / name).read_text())["data"]["crop_mix"]
        assert len(shipped) == 5 and sum(e["weight"] for e in shipped) == pytest.approx(1.0)
        mix = CropMix(yaml.safe_load(extra[1]), patch_size=16)
        assert {mix.choose(0, 0, batch) for batch in range(2)} == {0, 1}
    assert (tmp_path / "runs" / "pretrain" / "backbone.safetensors").is_file()


def test_gram_anchor_resumes_stage_one(shared_data, tmp_path, monkeypatch):
    """Stage 2 (gram_anchor.yaml layered on the stage-1 config) resumes the stage-1 checkpoint."""
    monkeypatch.chdir(tmp_path)
    base = ["pretrain", "--config", str(CONFIGS / "default.yaml")]
    common = tiny(shared_data, 3) + ["--model.optim.schedule_steps", "6"]
    assert main([*base, *common, "--data.gram_size", "null"]) == 0
    ckpt = tmp_path / "runs" / "ssl_default" / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, weights_only=True)["global_step"] == 3
    stage2 = [
        *base,
        "--config",
        str(CONFIGS / "gram_anchor.yaml"),
        *tiny(shared_data, 6, gram=True),
        "--model.optim.schedule_steps",
        "6",
        "--model.optim.stage_start_step",
        "3",
        "--model.gram.weight_start_step",
        "3",
        "--model.gram.weight_warmup_steps",
        "1",
        "--model.gram.first_update",
        "5",
        "--model.gram.update_frequency",
        "1",
        "--model.gram.max_updates",
        "1",
        "--ckpt_path",
        str(ckpt),
    ]
    assert main(stage2) == 0
    state = torch.load(ckpt, weights_only=True)
    assert state["global_step"] == 6
    assert bool(state["state_dict"]["gram_teacher.initialised"])
    assert int(state["state_dict"]["gram_teacher.num_updates"]) == 1
    rows = metrics(tmp_path / "runs" / "ssl_default")
    gram = [r for r in rows if r.get("loss/gram")]
    assert gram and min(int(r["step"]) for r in gram) >= 4  # weight 0 before step 4
