"""Locations of resources shipped with the package and of the shared sample data."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["resource_dir", "shared_data_dir"]

_PACKAGE_DIR = Path(__file__).resolve().parent


def resource_dir(kind: str) -> Path:
    """Return the folder of shipped resources of one kind.

    Args:
        kind: one of ``"sensors"``, ``"tasks"`` or ``"configs"``.

    Returns:
        The folder inside the installed package (a link to the repository's top-level folder).

    Raises:
        ValueError: if ``kind`` is not one of the shipped resource kinds.
    """
    if kind not in {"sensors", "tasks", "configs"}:
        raise ValueError(f"unknown resource kind {kind!r}: use 'sensors', 'tasks' or 'configs'")
    return _PACKAGE_DIR / "_resources" / kind


def shared_data_dir() -> Path:
    """Return the folder of real sample imagery used by tests and benchmarks.

    ``$DINOGEO_SHARED_DATA`` wins; otherwise ``../shared/data`` next to the repository.
    """
    env = os.environ.get("DINOGEO_SHARED_DATA")
    if env:
        return Path(env)
    return _PACKAGE_DIR.parent.parent / "shared" / "data"
