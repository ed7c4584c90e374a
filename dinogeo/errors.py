"""Exceptions raised by dinogeo.

Every exception derives from :class:`DinogeoError` and from the builtin that
best describes it, so callers can catch either. Messages name the file, the
problem and the fix.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

__all__ = [
    "BandMismatchError",
    "CheckpointError",
    "ConfigError",
    "DinogeoError",
    "LabelError",
    "NoValidDataError",
    "OutputExistsError",
    "RasterReadError",
    "SensorError",
    "SkippedFilesError",
    "option_style",
    "spell_option",
]


class DinogeoError(Exception):
    """Root of all dinogeo errors."""


class SensorError(DinogeoError, ValueError):
    """Unknown sensor, unknown band name or an invalid sensor YAML."""


class BandMismatchError(DinogeoError, ValueError):
    """The raster's bands do not match the sensor spec or the weight card."""


class RasterReadError(DinogeoError, OSError):
    """A raster or zarr store cannot be opened, is corrupt or lacks georeferencing."""


class NoValidDataError(DinogeoError, ValueError):
    """A raster, archive or chip has no (or too few) valid pixels."""


class LabelError(DinogeoError, ValueError):
    """Labels are missing a CRS, do not overlap the imagery or use unknown classes."""


class CheckpointError(DinogeoError, ValueError):
    """A checkpoint or model bundle cannot be loaded or does not match the model."""


class OutputExistsError(DinogeoError, FileExistsError):
    """An output exists and ``overwrite`` was not requested."""


class ConfigError(DinogeoError, ValueError):
    """A configuration value is invalid."""


class SkippedFilesError(DinogeoError, ValueError):
    """An archive holds files that do not fit the run and ``strict`` forbids skipping them."""


# ----------------------------------------------------------------------------- option wording
#: how the caller sets options: ("cli" or "python", the option prefix such as "data.")
_STYLE: ContextVar[tuple[str, str, frozenset[str]]] = ContextVar(
    "dinogeo_option_style", default=("python", "", frozenset())
)


@contextmanager
def option_style(
    mode: str | None = None, prefix: str | None = None, words: Iterable[str] | None = None
) -> Iterator[None]:
    """Word the fixes in error messages for the interface in use, inside the ``with`` block.

    ``dinogeo`` (the command) sets ``mode="cli"``; a LightningCLI command adds the prefix of its
    data options (``prefix="data."``). Without it, messages speak Python (``bands=[...]``).

    Args:
        mode: ``"cli"`` or ``"python"``; None keeps the current one.
        prefix: the options' namespace (``"data."``); None keeps the current one.
        words: list options the command line takes as separate words (``--data.bands B02 B03``);
            others are spelled as one YAML list (``'[B02, B03]'``). None keeps the current ones.
    """
    old_mode, old_prefix, old_words = _STYLE.get()
    if mode is not None and mode not in ("cli", "python"):
        raise ValueError(f"option_style mode must be 'cli' or 'python', got {mode!r}")
    token = _STYLE.set(
        (
            mode or old_mode,
            old_prefix if prefix is None else prefix,
            old_words if words is None else frozenset(words),
        )
    )
    try:
        yield
    finally:
        _STYLE.reset(token)


def _cli_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, list | tuple):
        return "'[" + ", ".join(_cli_value(v) for v in value) + "]'"
    return str(value)


def spell_option(name: str, value: Any) -> str:
    """How to set option ``name`` to ``value`` in the interface in use (see :func:`option_style`).

    ``spell_option("bands", ["B02", "B03"])`` reads ``--data.bands B02 B03`` under
    ``dinogeo pretrain``, ``--bands '[B02, B03]'`` under other commands and
    ``bands=['B02', 'B03']`` from Python.
    """
    mode, prefix, words = _STYLE.get()
    if mode == "cli":
        if name in words and isinstance(value, list | tuple) and value:
            return f"--{prefix}{name} " + " ".join(str(v) for v in value)
        return f"--{prefix}{name} {_cli_value(value)}"
    shown = list(value) if isinstance(value, tuple) else value
    return f"{prefix}{name}={shown!r}"
