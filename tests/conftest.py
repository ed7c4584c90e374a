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


@pytest.fixture
def count_opens(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Count ``rasterio.open`` calls (the readers open files through it); handles are closed first."""
    import rasterio

    from dinogeo.data import handles

    calls: list[str] = []
    real = rasterio.open

    def counting(path, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        calls.append(str(path))
        return real(path, *args, **kwargs)

    handles.close_handles()  # no cached handle may hide an open
    monkeypatch.setattr(rasterio, "open", counting)
    return calls
