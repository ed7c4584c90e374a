"""`dinogeo pretrain` pointed at real, messy archive folders: it trains on what fits, reports the rest."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from dinogeo import progress
from dinogeo.cli.main import main
from dinogeo.config import load_config
from dinogeo.data.dataset import ChipDataset
from dinogeo.errors import SensorError
from dinogeo.models import load_backbone
from dinogeo.ssl.datamodule import SSLDataModule
from dinogeo.ssl.pretrain import join_list_words, pretrain
from tests.data.archive.mixed import RUFIJI, make_mixed_archive

DEFAULT = Path(__file__).resolve().parents[2] / "configs" / "ssl" / "default.yaml"
VIRGINIA = "sentinel2-l1c-virginia-sattestdata"
QUICK = [
    "--trainer.max_steps",
    "3",
    "--data.samples_per_epoch",
    "24",
    "--trainer.enable_progress_bar",
    "false",
]


def test_pretrain_on_a_mixed_folder_reports_what_it_skipped(
    shared_data, tmp_path, monkeypatch, capfd
):
    """The README command on Sentinel-2 scenes mixed with label rasters, other sensors, broken files."""
    folder = tmp_path / "archive"
    made = make_mixed_archive(folder, shared_data)
    root = tmp_path / "run"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    args = ["pretrain", "--config", str(DEFAULT), "--data.sources", f"[{folder}]"]
    assert main([*args, "--trainer.default_root_dir", str(root), *QUICK]) == 0
    err = capfd.readouterr().err
    assert (
        "archive: 5 of 15 files used, sensor sentinel2_sr_x1000 (inferred from 5 of 13 readable files)"
        in err
    )
    assert "skipped 10 files (" in err
    assert f"every skipped file and its reason: {root / 'skipped_files.csv'}" in err
    with (root / "skipped_files.csv").open() as fh:
        rows = {Path(r["path"]).name: r["reason"] for r in csv.DictReader(fh)}
    expected = {p.name for g in ("labels", "other") for p in made[g]}
    expected |= {"corrupt.tif", "truncated.tif", "swiss_worldfile.png", "all_nodata.tif"}
    assert set(rows) == expected and all(rows.values())
    # outputs follow --trainer.default_root_dir; nothing lands in the working folder
    assert (root / "checkpoints" / "last.ckpt").is_file()
    assert list((root / "csv").rglob("metrics.csv")) and list(
        (root / "tensorboard").rglob("events*")
    )
    assert not list(cwd.iterdir())
    backbone = root / "backbone.safetensors"
    assert f"pretrain: backbone exported to {backbone}" in err
    assert "weight card: vit_test_patch16_dinov3 (embed 64, patch 16), 10 bands B02 B03" in err
    assert "of sensor sentinel2_sr_x1000 (reflectance = DN x 0.001 + 0)" in err
    _, card = load_backbone(backbone)
    assert card.sensor == "sentinel2_sr_x1000" and card.in_chans == 10
    # the whole-run progress line
    assert "pretrain: step 3/3 (100%)" in err and "images/s" in err
    assert "pretrain: done, 3 steps in" in err


def test_pretrain_on_the_rufiji_series_with_json_progress(
    shared_data, tmp_path, monkeypatch, capfd
):
    monkeypatch.setenv(progress.ENV, "bar")
    root = tmp_path / "run"
    args = ["--progress", "json", "pretrain", "--config", str(DEFAULT)]
    args += ["--data.sources", f"[{shared_data / RUFIJI}]", "--trainer.default_root_dir", str(root)]
    try:
        assert main([*args, *QUICK]) == 0
    finally:
        progress.install("bar")
    err = capfd.readouterr().err
    assert "archive: 20 of 23 files used" in err
    assert "20 dates 2016-03-12 ... 2020-01-01 over 1 place" in err
    # the date that is 95 % cloud-masked cannot hold a 96-px chip: skipped, not a failed run
    assert "SEN2_20160829_T37MEM_20m_10band.tif: too little valid data" in err
    records = [json.loads(line) for line in err.splitlines() if line.startswith('{"progress"')]
    steps = [r for r in records if r["message"].startswith("pretrain step")]
    assert steps[-1]["message"].startswith("pretrain step 3/3") and steps[-1]["progress"] == 1.0
    assert steps[-1]["images_per_s"] > 0 and steps[-1]["eta_s"] == 0.0
    assert records[-1]["message"] == "pretrain: done after 3 steps"
    with (root / "skipped_files.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == 3


def test_multi_date_chips_come_from_many_dates_and_respect_each_date_mask(shared_data):
    """The 21 Rufiji dates (valid 5-100 %): chips are drawn across dates, each date's mask decides."""
    dm = SSLDataModule(
        sources=[str(shared_data / RUFIJI)],
        samples_per_epoch=96,
        batch_size=8,
        num_workers=0,
        global_size=32,
        local_size=16,
        n_local=2,
        chip_size=64,
        min_valid_fraction=0.5,
    )
    dm.train_dataloader()
    sampler = dm._sampler
    assert sampler is not None
    queries = list(sampler.base)
    chips = ChipDataset(dm.open_sources(), min_valid=0.5, validity=sampler.base.validity)
    dates = set()
    for query in queries:
        sample = chips[query]
        assert float(sample["valid"].float().mean()) >= 0.5  # masked (0) pixels of that date
        dates.add(dm.archive.datetimes[query.source])
    assert len(dates) >= 12  # of 21 dates, some almost fully clouded


def test_errors_speak_the_interface_in_use(shared_data, tmp_path, capfd):
    """The same ambiguity reads as a command-line option or as a config key from Python."""
    sources = f"[{shared_data / VIRGINIA}]"
    root = str(tmp_path / "run")
    args = ["pretrain", "--config", str(DEFAULT), "--data.sources", sources]
    assert main([*args, "--trainer.default_root_dir", root]) == 1
    err = capfd.readouterr().err
    assert "dinogeo pretrain: error: cannot infer the sensor" in err
    assert "choose one with --data.sensor sentinel2_l1c" in err
    config = load_config(DEFAULT, {"data.sources": [str(shared_data / VIRGINIA)]})
    config["trainer"]["default_root_dir"] = root
    with pytest.raises(SensorError, match=r"choose one with data.sensor='sentinel2_l1c'"):
        pretrain(config)


def test_band_errors_on_the_command_line_name_every_band_of_the_file(shared_data, tmp_path, capfd):
    """`--data.bands B02 B03 ...` is taken as words, and the fix is spelled the same way."""
    args = ["pretrain", "--config", str(DEFAULT), "--trainer.default_root_dir", str(tmp_path)]
    args += ["--data.sources", str(shared_data / RUFIJI), "--data.sensor", "sentinel2_l1c"]
    assert main([*args, "--data.bands", "B02", "B03", "B04", "B08"]) == 1
    err = capfd.readouterr().err
    assert "no usable file among the 23 of the archive for sensor sentinel2_l1c" in err
    assert (
        "name the file's 10 bands in order with --data.bands B01 B02 B03 B04 B05 B06 B07 B08 B8A "
        "B09; or a sensor of 10 bands: --data.sensor sentinel2_sr_x1000"
    ) in err


def test_list_options_take_words():
    assert join_list_words(["--data.bands", "B02", "B03", "--data.sources", "a b.tif"]) == [
        "--data.bands",
        '["B02", "B03"]',
        "--data.sources",
        '["a b.tif"]',
    ]
    kept = ["--data.bands", "[B02, B03]", "--data.sources", "null", "--data.bands=[B02]"]
    assert join_list_words(kept) == kept


def test_output_locations_follow_the_root_unless_given():
    from jsonargparse import Namespace

    from dinogeo.ssl.pretrain import fill_output_locations

    checkpoint = "lightning.pytorch.callbacks.ModelCheckpoint"
    config = Namespace(
        trainer=Namespace(
            default_root_dir="/runs/x",
            logger=None,
            callbacks=[
                Namespace(class_path=checkpoint, init_args=Namespace(dirpath=None)),
                Namespace(class_path=checkpoint, init_args=Namespace(dirpath="/keep/ckpt")),
            ],
        ),
        model=Namespace(export_path=None),
    )
    fill_output_locations(config)
    assert [lg.init_args.save_dir for lg in config.trainer.logger] == ["/runs/x", "/runs/x"]
    assert [lg.init_args.name for lg in config.trainer.logger] == ["csv", "tensorboard"]
    dirs = [cb.init_args.dirpath for cb in config.trainer.callbacks]
    assert dirs == ["/runs/x/checkpoints", "/keep/ckpt"]
    assert config.model.export_path == "/runs/x/backbone.safetensors"
    given = Namespace(
        trainer=Namespace(default_root_dir="/runs/y", logger=False, callbacks=None),
        model=Namespace(export_path="/keep/b.safetensors"),
    )
    fill_output_locations(given)
    assert given.trainer.logger is False and given.model.export_path == "/keep/b.safetensors"
