"""Locations of resources shipped with the package and of the shared sample data."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["SHARED_DATA_IN_CONFIGS", "config_text", "resource_dir", "shared_data_dir"]

#: how shipped configs name the shared sample data (relative to the repository root)
SHARED_DATA_IN_CONFIGS = "../shared/data"

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


def config_text(name: str, shared: Path | None = None) -> str:
    """Return a shipped config's YAML with its shared-data paths pointing at ``shared``.

    Shipped configs name the sample data ``../shared/data/...`` (true when run from the
    repository root); tests and benchmarks run from anywhere, so they read configs through here.

    Args:
        name: the config's path under ``configs/``, e.g. ``"finetune/land_cover_aberystwyth"``
            (``.yaml`` optional).
        shared: the shared-data folder (default: :func:`shared_data_dir`).

    Returns:
        The YAML text.
    """
    path = resource_dir("configs") / (name if name.endswith(".yaml") else f"{name}.yaml")
    folder = shared_data_dir() if shared is None else shared
    return path.read_text().replace(SHARED_DATA_IN_CONFIGS, str(folder))
