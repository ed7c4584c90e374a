"""The tracking notebooks in examples/ run end to end (re-executed here, as committed)."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NOTEBOOKS = {
    "deforestation_sentinel1_myanmar.ipynb": ["output/myanmar/loss_date.tif", "output/myanmar/confidence.tif", "output/myanmar/alerts.gpkg", "output/myanmar/accuracy.md"],
    "mangrove_loss_sentinel2_rufiji.ipynb": ["output/rufiji/loss_date.tif", "output/rufiji/alerts.gpkg", "output/rufiji/loss_by_period.csv"],
    "track_your_own_archive.ipynb": ["output/own_archive/index.parquet", "output/own_archive/alerts/alerts.gpkg"],
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_notebook_runs(name, tmp_path, shared_data):
    committed = nbformat.read(EXAMPLES / name, as_version=4)
    # committed with their outputs, so they read well on GitHub
    assert any(c.get("outputs") for c in committed.cells if c.cell_type == "code")
    shutil.copy(EXAMPLES / name, tmp_path / name)
    nb = nbformat.read(tmp_path / name, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    for rel in NOTEBOOKS[name]:
        assert (tmp_path / rel).is_file(), rel
    images = sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert images >= (1 if name.startswith("track_your_own") else 3)
