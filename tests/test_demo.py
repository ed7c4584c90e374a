"""`dinogeo demo` end to end on the real NC Landsat 7 sample (short step budgets)."""

import contextlib
import io
import json
import sqlite3
import xml.etree.ElementTree as ET

import pytest
import rasterio
import torch
from safetensors.torch import load_file

from dinogeo.cli.main import main
from dinogeo.demo import run_demo
from dinogeo.errors import ConfigError

#: a short demo: 10 pretraining steps (two logged rows), 8 head steps (one epoch)
STEPS = ["--pretrain-steps", "10", "--fit-steps", "8"]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One short demo through the command line (seed 0): its folder and printed report."""
    out = tmp_path_factory.mktemp("demo") / "demo"
    report = io.StringIO()
    with contextlib.redirect_stdout(report):
        status = main(["demo", "-o", str(out), *STEPS, "-q"])
    assert status == 0
    return out, report.getvalue()


def test_demo_runs_end_to_end(demo_run):
    out, report = demo_run
    assert "validation on the 1996 points" in report
    assert "pretraining: 10 steps" in report and "head: 8 steps" in report

    with (
        rasterio.open(out / "nc_landsat7_2000.tif") as scene,
        rasterio.open(out / "nc_landcover.tif") as pred,
    ):
        assert pred.crs == scene.crs
        assert pred.transform == scene.transform
        assert pred.dtypes[0] == "uint8"
        classes = set(int(v) for v in pred.read(1, out_shape=(64, 64)).ravel()) - {pred.nodata}
        assert classes and classes <= set(range(1, 8))

    metrics = json.loads((out / "metrics.json").read_text())
    for side in ("head", "per_pixel_linear"):
        assert 0.0 <= metrics[side]["miou"] <= 1.0
        assert metrics[side]["pixels"] > 500  # most of the 1000 points fall on valid pixels

    # the accuracy tables and the points layer QGIS users expect
    table = (out / "validation" / "class_accuracy.csv").read_text().splitlines()
    assert table[0].startswith("class_value,class_name") and len(table) == 8
    with sqlite3.connect(out / "validation" / "validation_points.gpkg") as db:
        n = db.execute("select count(*) from validation_points").fetchone()[0]
    assert n == metrics["head"]["pixels"]

    names = {el.get("label") for el in ET.parse(out / "nc_landcover.qml").iter("paletteEntry")}
    assert {"forest", "water", "developed"} <= {n.lower() for n in names if n}
    with sqlite3.connect(out / "nc_landcover.gpkg") as db:
        assert db.execute("select count(*) from layer_styles where useAsDefault").fetchone()[0] == 1
    assert (out / "pretrain_curves.png").stat().st_size > 1000
    assert (out / "nc_features_pca.png").stat().st_size > 1000
    assert (out / "backbone.safetensors").is_file()


def test_demo_metrics_repeat_with_the_seed(demo_run, tmp_path):
    """Step budgets and seeds, not the clock: the same seed gives the same metrics, bit for bit.

    The second run starts from another thread count of the caller and in another load of the
    machine, and still matches; another seed gives another backbone and head.
    """
    first = json.loads((demo_run[0] / "metrics.json").read_text())
    threads = torch.get_num_threads()
    caller = 2 if threads == 1 else 1
    torch.set_num_threads(caller)  # the demo runs on its own count and restores the caller's
    try:
        again = run_demo(tmp_path / "again", pretrain_steps=10, fit_steps=8, progress=False)
        assert torch.get_num_threads() == caller
    finally:
        torch.set_num_threads(threads)
    second = json.loads((again.out_dir / "metrics.json").read_text())
    assert second == first
    assert first["pretraining"]["steps"] == 10 and first["fit_steps"] == 8

    other = run_demo(tmp_path / "other", pretrain_steps=10, fit_steps=8, seed=1, progress=False)
    assert other.pretraining["dino_loss"] != first["pretraining"]["dino_loss"]
    assert other.baseline == first["per_pixel_linear"]  # the baseline does not train with it
    # 8 head steps can give the same class at all 751 points: compare the heads' weights
    heads = [load_file(run.files["bundle"]) for run in (again, other)]
    assert heads[0].keys() == heads[1].keys()
    assert not all(torch.equal(heads[0][k], heads[1][k]) for k in heads[0])


@pytest.mark.parametrize(
    "kwargs", [{"pretrain_steps": 0}, {"fit_steps": -1}, {"threads": 0}, {"max_minutes": 0}]
)
def test_demo_rejects_bad_budgets(tmp_path, kwargs):
    with pytest.raises(ConfigError, match=next(iter(kwargs))):
        run_demo(tmp_path, **kwargs)
