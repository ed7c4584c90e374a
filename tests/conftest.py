"""Shared fixtures: the real imagery in ../shared/data and small helpers."""

from __future__ import annotations

from pathlib import Path

import pytest

from dinogeo._paths import shared_data_dir

SHARED = shared_data_dir()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real imagery (``../shared/data`` or ``$DINOGEO_SHARED_DATA``).

    In CI it is always present, so its absence is an error, not a skip.
    """
    if not (SHARED / "MANIFEST.md").is_file():
        raise FileNotFoundError(
            f"real sample data not found at {SHARED}: place the shared folder beside the "
            "repository or set DINOGEO_SHARED_DATA"
        )
    return SHARED
