"""Batch mode (*Run as Batch Process...*) of the dinogeo algorithms in real QGIS 3.22.

QGIS's own batch dialog runs the rows: ``BatchAlgorithmDialog`` is built offscreen (never
shown), its *Open* button reads a batch file in QGIS's format and its *Run* button
(``runAlgorithm``) runs every row with a fresh context and loads the results. Only the modal
file picker is answered by the test (``tests/qgis/pyqgis_helper.py batch``).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from tests.qgis.conftest import NC_IMAGE

pytestmark = [pytest.mark.qgis, pytest.mark.slow]

NC_CLASSES = ["agriculture", "developed", "forest", "herbaceous", "sediment", "shrubland", "water"]


def test_every_parameter_of_every_algorithm_has_a_batch_widget(qgis):
    cells = qgis.python("batch-widgets", "dinogeo")
    assert {a.split(":")[1] for a in cells} == {
        "predict",
        "embed",
        "fit",
        "validate",
        "track",
        "adapt",
    }
    for algorithm, widgets in cells.items():
        missing = [name for name, widget in widgets.items() if widget is None]
        assert not missing, f"{algorithm}: no batch-mode widget for {missing}"
        assert widgets["OUTPUT"] == "BatchOutputSelectionPanel", algorithm


def write_window(src, dst, window):
    """A window of a real raster as its own GeoTIFF (a second scene for the batch)."""
    with rasterio.open(src) as ds:
        profile = dict(ds.profile, width=window.width, height=window.height, tiled=False)
        for key in ("blockxsize", "blockysize"):
            profile.pop(key, None)
        profile["transform"] = ds.window_transform(window)
        with rasterio.open(dst, "w", **profile) as out:
            out.write(ds.read(window=window))


def test_batch_predict_runs_every_row_and_loads_each_result_styled(
    qgis, nc_bundle, shared_data, tmp_path
):
    west = tmp_path / "nc_west.tif"
    window = Window(0, 0, 200, 150)
    write_window(shared_data / NC_IMAGE, west, window)
    model = nc_bundle["results"]["OUTPUT"]
    out = tmp_path / "out"
    rows = [  # QGIS's batch file format: parameter values as Python literals
        {
            "PARAMETERS": {
                "INPUT": repr(str(shared_data / NC_IMAGE)),
                "MODEL": repr(model),
                "VECTORIZE": "True",
                "TILE": "256",
                "OVERLAP": "32",
                "BATCH_SIZE": "4",
                "DEVICE": "0",
            },
            "OUTPUTS": {"OUTPUT": str(out / "full.tif")},
        },
        {
            "PARAMETERS": {
                "INPUT": repr(str(west)),
                "MODEL": repr(model),
                "VECTORIZE": "False",
                "TILE": "128",
                "OVERLAP": "16",
                "BATCH_SIZE": "4",
                "DEVICE": "0",
            },
            "OUTPUTS": {"OUTPUT": str(out / "west.tif")},
        },
    ]
    batch_file = tmp_path / "predict.batch.json"
    batch_file.write_text(json.dumps(rows))
    ran = qgis.python("batch", "dinogeo:predict", str(batch_file))
    # the panel read both rows as the parameters we wrote
    assert [r["INPUT"] for r in ran["rows"]] == [str(shared_data / NC_IMAGE), str(west)]
    assert [r["TILE"] for r in ran["rows"]] == ["256", "128"]
    assert [r["OUTPUT"] for r in ran["rows"]] == [str(out / "full.tif"), str(out / "west.tif")]
    log = ran["log"]
    assert "Processing algorithm 2/2" in log and log.count("correctly executed") == 2, log
    assert "failed" not in log, log
    # each row's output, with its own parameters
    with rasterio.open(out / "full.tif") as full, rasterio.open(out / "west.tif") as part:
        assert (full.width, full.height) == (489, 443)
        assert (part.width, part.height) == (200, 150)
        assert part.crs == full.crs and part.transform == full.window_transform(window)
        assert full.nodata == part.nodata == 0
        a, b = full.read(1, window=window), part.read(1)
    classes = set(range(1, 8))
    assert set(np.unique(a)) - {0} <= classes and set(np.unique(b)) - {0} <= classes
    inner = (slice(32, -32), slice(32, -32))  # away from both maps' edges
    both = (a[inner] > 0) & (b[inner] > 0)
    assert both.mean() > 0.5  # a fifth of this corner misses band 7 (nodata)
    agreement = float((a[inner] == b[inner])[both].mean())
    assert agreement > 0.6, agreement  # same model, other windows and tiling
    assert (out / "full.gpkg").exists() and not (out / "west.gpkg").exists()  # VECTORIZE per row
    # what the user sees after Run: both maps and the polygons loaded, styled
    loaded = ran["loaded"]
    for name in ("full.tif", "west.tif"):
        layer = loaded[str(out / name)]
        assert layer["renderer"] == "paletted" and layer["classes"] == NC_CLASSES, layer
    polygons = loaded[str(out / "full.gpkg")]
    assert polygons["renderer"] == "categorizedSymbol", polygons
    assert set(polygons["classes"]) <= set(NC_CLASSES) and len(polygons["classes"]) >= 2
