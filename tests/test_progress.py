"""Machine-readable progress (``dinogeo --progress json``): JSON lines on stderr."""

import json
import os
import subprocess
import sys

import pytest

from dinogeo import progress
from dinogeo.cli.main import main


@pytest.fixture
def json_mode(monkeypatch):
    monkeypatch.setenv(progress.ENV, "json")
    progress.install()
    yield
    monkeypatch.setenv(progress.ENV, "bar")
    progress.install()


def _records(text):
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_json_bar_reports_fraction_eta_and_message(json_mode, capsys):
    import tqdm.auto

    assert tqdm.auto.tqdm is progress.JsonTqdm
    bar = tqdm.auto.tqdm(total=40, desc="predict", unit="tile", mininterval=0)
    for _ in range(40):
        bar.update(1)
    bar.close()
    records = _records(capsys.readouterr().err)
    assert records[-1]["progress"] == 1.0 and records[-1]["message"] == "predict 40/40 tile"
    assert records[-1]["eta_s"] == 0.0
    middle = [r for r in records if 0 < r["progress"] < 1]
    assert middle and all(r["eta_s"] is not None and r["eta_s"] >= 0 for r in middle)
    fractions = [r["progress"] for r in records]
    assert fractions == sorted(fractions)
    assert len(records) == len({r["progress"] for r in records})  # no repeated final line


def test_bar_mode_restores_tqdm():
    import tqdm
    import tqdm.auto

    progress.install("bar")
    assert tqdm.auto.tqdm is not progress.JsonTqdm and tqdm.tqdm is not progress.JsonTqdm
    assert os.environ[progress.ENV] == "bar"


def test_dispatcher_option(capsys, monkeypatch):
    monkeypatch.setenv(progress.ENV, "bar")
    assert main(["--progress", "xml", "sensors"]) == 2
    assert "--progress takes one of" in capsys.readouterr().err
    assert main(["--progress=bar", "sensors"]) == 0
    assert "sentinel2_l2a" in capsys.readouterr().out


def test_json_progress_from_a_real_subcommand(shared_data, tmp_path):
    """``dinogeo --progress json stats`` on a real scene: one JSON record per line on stderr."""
    scene = shared_data / "landsat7-rgb-bahamas-rasterio" / "RGB.byte.tif"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "dinogeo.cli.main", "--progress", "json", "stats", str(scene),
         "-o", str(tmp_path / "s.yaml")],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    records = _records(done.stderr)
    assert records and records[-1]["progress"] == 1.0 and records[-1]["message"].startswith("stats")
