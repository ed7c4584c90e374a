"""Fixtures of the tracking tests: the real Myanmar Sentinel-1 stack and its tracking run."""

from __future__ import annotations

from pathlib import Path

import pytest

from dinogeo.tracking import TrackResult, track_series

MYANMAR = "sentinel1-disturbance-myanmar-ddl8s1ts"
RUFIJI = "sentinel2-timeseries-rufiji-rsgislib"


@pytest.fixture(scope="session")
def myanmar(shared_data: Path) -> dict[str, Path]:
    d = shared_data / MYANMAR
    return {
        "stack": d / "S1_VV_VH_dBx100_85dates_2014-2018.tif",
        "dates": d / "S1_dates.csv",
        "points": d / "reference_points_dev.geojson",
    }


@pytest.fixture(scope="session")
def myanmar_run(myanmar: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> TrackResult:
    """One tracking run over the 85 dates with the 150 reference points and every nrt monitor."""
    out = tmp_path_factory.mktemp("myanmar") / "out"
    return track_series(
        myanmar["stack"],
        out,
        dates_csv=myanmar["dates"],
        monitor_start="2016-01-01",
        reference=myanmar["points"],
        progress=False,
    )
