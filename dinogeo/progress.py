"""Machine-readable progress: JSON lines on stderr for programs that drive ``dinogeo`` (QGIS).

``dinogeo --progress json SUBCOMMAND ...`` (or ``DINOGEO_PROGRESS=json``) turns every progress bar
of the package into one JSON object per line on stderr, for example::

    {"progress": 0.25, "eta_s": 12.4, "elapsed_s": 4.1, "message": "predict 10/40 tile"}

``progress`` is the fraction done (0-1) of the current stage, ``eta_s`` the estimated seconds
left (null when unknown). The package's bars are tqdm bars; :func:`install` swaps tqdm's class for
:class:`JsonTqdm` before the subcommand's modules are imported, so each module keeps its usual
``tqdm(...)`` call. Training reports through :func:`lightning_callback` (steps of the whole run,
not of one epoch). Nothing here imports torch.
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
from typing import Any

import tqdm as tqdm_pkg
import tqdm.auto
import tqdm.std

__all__ = ["ENV", "JsonTqdm", "emit", "install", "json_mode", "lightning_callback"]

#: environment variable selecting the progress mode ("json"); set by ``dinogeo --progress json``
ENV = "DINOGEO_PROGRESS"
MODES = ("bar", "json")
_TQDM_MODULES = (tqdm_pkg, tqdm.auto, tqdm.std)
_ORIGINAL = {m.__name__: m.tqdm for m in _TQDM_MODULES}


def json_mode() -> bool:
    """True when progress is reported as JSON lines (``DINOGEO_PROGRESS=json``)."""
    return os.environ.get(ENV, "bar").lower() == "json"


def emit(fraction: float | None, message: str, *, eta_s: float | None = None, **extra: Any) -> None:
    """Write one progress record as a JSON line on stderr.

    Args:
        fraction: the share done, 0-1 (None when the total is unknown).
        message: what runs, for the user.
        eta_s: estimated seconds left, or None.
        **extra: more JSON-serialisable fields (e.g. ``elapsed_s``).
    """
    record: dict[str, Any] = {
        "progress": None if fraction is None else round(min(max(fraction, 0.0), 1.0), 4),
        "eta_s": None if eta_s is None else round(eta_s, 1),
        "message": message,
        **extra,
    }
    sys.stderr.write(json.dumps(record) + "\n")
    sys.stderr.flush()


class JsonTqdm(tqdm.std.tqdm):  # type: ignore[misc]  # tqdm is untyped
    """A tqdm bar that prints JSON progress lines instead of drawing (at most one per 0.5 s)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("mininterval", 0.5)
        kwargs["file"] = io.StringIO()  # nothing is drawn: display() writes JSON lines
        super().__init__(*args, **kwargs)

    def display(self, msg: str | None = None, pos: int | None = None) -> None:
        """Emit the bar's state as a JSON line (called by tqdm on refresh)."""
        d = self.format_dict
        n, total, elapsed, rate = d["n"], d["total"], d["elapsed"], d["rate"]
        if getattr(self, "_json_last", None) == (n, total):
            return  # nothing new (tqdm redraws on close)
        self._json_last = (n, total)
        if rate is None and elapsed and n:
            rate = n / elapsed
        eta = (total - n) / rate if total and rate else None
        desc = (d.get("prefix") or "").rstrip(": ")
        count = f"{n:g}/{total:g}" if total else f"{n:g}"
        emit(
            n / total if total else None,
            f"{desc} {count} {d.get('unit') or ''}".strip(),
            eta_s=eta,
            elapsed_s=round(elapsed, 1),
        )

    def close(self) -> None:
        """Emit the final state, then close the bar."""
        if not self.disable:
            self.display()
        super().close()


def install(mode: str | None = None) -> None:
    """Select the progress mode for this process (before the subcommand's modules are imported).

    Args:
        mode: ``"json"`` or ``"bar"``; None keeps ``$DINOGEO_PROGRESS`` (default ``"bar"``).

    Raises:
        ValueError: an unknown mode.
    """
    if mode is not None:
        if mode not in MODES:
            raise ValueError(f"--progress must be one of {MODES}, got {mode!r}")
        os.environ[ENV] = mode
    for module in _TQDM_MODULES:
        module.tqdm = JsonTqdm if json_mode() else _ORIGINAL[module.__name__]  # type: ignore[attr-defined]


def lightning_callback() -> Any | None:
    """A Lightning callback reporting training steps as JSON lines, or None in bar mode."""
    if not json_mode():
        return None
    from lightning.pytorch import Callback, LightningModule, Trainer

    class JsonStepProgress(Callback):  # type: ignore[misc]  # Lightning is untyped here
        """Training progress over all steps of the run (``Trainer.estimated_stepping_batches``)."""

        def __init__(self) -> None:
            self._start = 0.0
            self._last = 0.0

        def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
            self._start = time.perf_counter()
            emit(0.0, "fit: starting")

        def on_train_batch_end(
            self, trainer: Trainer, pl_module: LightningModule, *args: Any
        ) -> None:
            now = time.perf_counter()
            total = trainer.estimated_stepping_batches
            step = trainer.global_step
            if now - self._last < 0.5 and step < total:
                return
            self._last = now
            elapsed = now - self._start
            known = bool(total) and total != float("inf")
            eta = elapsed / step * (total - step) if known and step else None
            loss = trainer.callback_metrics.get("train_loss")
            text = f"fit step {step}/{int(total)}" if known else f"fit step {step}"
            if loss is not None:
                text += f" loss {float(loss):.4f}"
            emit(step / total if known else None, text, eta_s=eta, elapsed_s=round(elapsed, 1))

        def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
            emit(1.0, f"fit: done after {trainer.global_step} steps", eta_s=0.0)

    return JsonStepProgress()
