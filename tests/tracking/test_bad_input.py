"""Bad input to track_series and `dinogeo track`: a clear error naming the problem, nothing written."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dinogeo.cli.main import main as cli_main
from dinogeo.errors import LabelError, NoValidDataError, OutputExistsError
from dinogeo.tracking import SeriesError, open_series, track_series
from tests.data.tracking.data import rufiji_files, write_crops

S2 = "sentinel2_sr_x1000"


def _run(inputs, out, **kw):
    kw.setdefault("monitor_start", "2016-08-01")
    kw.setdefault("min_history", 2)
    return track_series(inputs, out, sensor=S2, progress=False, **kw)


def _nothing_written(out):
    assert not out.exists() and not out.with_name(out.name + ".partial").exists()


def test_single_date(tmp_path):
    files = write_crops(tmp_path / "in", 1)
    with pytest.raises(SeriesError, match="at least two dates"):
        _run(files, tmp_path / "out")
    _nothing_written(tmp_path / "out")


def test_missing_dates(tmp_path):
    files = write_crops(tmp_path / "in", 3, names=["a.tif", "b_20160710.tif", "c.tif"])
    with pytest.raises(SeriesError, match=r"no acquisition date for 2 file\(s\).*a\.tif"):
        _run(files, tmp_path / "out")
    _nothing_written(tmp_path / "out")


def test_duplicate_dates_are_unsortable(tmp_path):
    files = write_crops(tmp_path / "in", 2, names=["x_20160312.tif", "y_2016-03-12.tif"])
    with pytest.raises(SeriesError, match="same date 2016-03-12"):
        open_series(files, sensor=S2)


def test_dates_from_csv(tmp_path):
    write_crops(tmp_path / "in", 3, names=["a.tif", "b.tif", "c.tif"])
    csv = tmp_path / "dates.csv"
    csv.write_text("file,date\na.tif,2016-03-12\nb.tif,2016-07-10\nc.tif,2016-07-20\n")
    s = open_series(tmp_path / "in", sensor=S2, dates_csv=csv)
    assert [str(d) for d in s.dates] == ["2016-03-12", "2016-07-10", "2016-07-20"]


def test_grids_that_do_not_overlap(tmp_path):
    files = write_crops(tmp_path / "in", 3, shift=(1e5, 0))
    with pytest.raises(SeriesError, match="does not overlap"):
        _run(files, tmp_path / "out")
    _nothing_written(tmp_path / "out")


def test_monitoring_before_any_history(tmp_path):
    files = write_crops(tmp_path / "in", 4)
    with pytest.raises(SeriesError, match="dates before it"):
        _run(files, tmp_path / "out", monitor_start="2016-01-01")
    _nothing_written(tmp_path / "out")


def test_all_nodata_series(tmp_path):
    files = write_crops(tmp_path / "in", 4, zero=True)
    with pytest.raises(NoValidDataError, match="all nodata"):
        _run(files, tmp_path / "out")
    _nothing_written(tmp_path / "out")


def test_reference_points_outside(tmp_path, myanmar):
    files = write_crops(tmp_path / "in", 4)
    with pytest.raises(LabelError, match="150 of 150 reference points lie outside"):
        _run(files, tmp_path / "out", reference=myanmar["points"])
    _nothing_written(tmp_path / "out")


def test_existing_output_and_cli_errors(tmp_path, capsys):
    files = write_crops(tmp_path / "in", 4)
    out = tmp_path / "out"
    r = _run(files, out, baselines=None)
    assert (out / "loss_date.tif").is_file() and r.metrics == {}
    with pytest.raises(OutputExistsError, match="overwrite"):
        _run(files, out)
    # the CLI: same checks, an exit status and the message
    code = cli_main(["track", str(files[0]), "-o", str(tmp_path / "cli"), "--monitor_start", "2016-08-01", "--sensor", S2])
    assert code != 0
    assert "at least two dates" in capsys.readouterr().err
    assert not (tmp_path / "cli").exists()


def test_resume_keeps_finished_tiles(tmp_path, monkeypatch):
    from dinogeo.tracking import tiles as tiles_mod
    from dinogeo.tracking import track as track_mod

    files = rufiji_files()[:8]
    out = tmp_path / "out"
    real = tiles_mod.tile_scores
    calls = {"n": 0}

    def failing(setup, win):
        calls["n"] += 1
        if calls["n"] == 9 + 4:  # 9 calibration reads of the 9 tiles, then 3 finished tiles
            raise KeyboardInterrupt
        return real(setup, win)

    monkeypatch.setattr(tiles_mod, "tile_scores", failing)
    monkeypatch.setattr(track_mod, "CACHE_TILES", 0)  # every tile is read again by the main pass
    kw = dict(monitor_start="2017-06-01", min_history=3, tile=64, threshold=3.0)
    with pytest.raises(KeyboardInterrupt):
        _run(files, out, **kw)
    partial = out.with_name("out.partial")
    done = sorted(partial.glob("tile_*.npz"))
    assert len(done) == 3 and not (out / "loss_date.tif").exists()
    monkeypatch.setattr(tiles_mod, "tile_scores", real)
    resumed = _run(files, out, resume=True, **kw)
    fresh = _run(files, tmp_path / "fresh", **kw)
    import rasterio

    with rasterio.open(out / "loss_date.tif") as a, rasterio.open(tmp_path / "fresh/loss_date.tif") as b:
        assert np.array_equal(a.read(1), b.read(1))
    assert resumed.threshold == fresh.threshold == 3.0
    assert not partial.exists()


def test_cli_runs_myanmar_with_one_monitor(tmp_path, myanmar, capsys):
    out = tmp_path / "m"
    code = cli_main([
        "track", str(myanmar["stack"]), "--dates_csv", str(myanmar["dates"]), "-o", str(out),
        "--monitor_start", "2016-01-01", "--reference", str(myanmar["points"]),
        "--baselines", "mosum", "--quiet",
    ])
    assert code == 0
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["methods"]) == {"dinogeo (cross-validated)", "dinogeo (history threshold)", "nrt MoSum (VH)", "nrt MoSum (VV/VH)"}
