"""Machine-readable progress: JSON lines on stderr for programs that drive ``dinogeo`` (QGIS).

``dinogeo --progress json SUBCOMMAND ...`` (or ``DINOGEO_PROGRESS=json``) turns every progress bar
of the package into one JSON object per line on stderr, for example::

    {"progress": 0.25, "eta_s": 12.4, "elapsed_s": 4.1, "message": "predict 10/40 tile"}

``progress`` is the fraction done (0-1) of the current stage, ``eta_s`` the estimated seconds
left (null when unknown). The package's bars are tqdm bars; :func:`install` swaps tqdm's class for
:class:`JsonTqdm` before the subcommand's modules are imported, so each module keeps its usual
``tqdm(...)`` call. Training reports through :func:`run_progress_callback` (steps of the whole
run, not of one epoch, with ETA and images/s; a text line every few seconds in bar mode). Nothing here imports torch.
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

__all__ = [
    "ENV",
    "JsonTqdm",
    "emit",
    "format_duration",
    "install",
    "json_mode",
    "lightning_callback",
    "run_progress_callback",
]

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


class JsonTqdm(tqdm.std.tqdm):  # type: ignore[type-arg]  # generic only in its stubs
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
    return run_progress_callback("fit") if json_mode() else None


def format_duration(seconds: float) -> str:
    """``h:mm:ss`` (``m:ss`` under an hour)."""
    s = max(0, round(seconds))
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def run_progress_callback(name: str = "fit", *, every_s: float = 10.0) -> Any:
    """A Lightning callback reporting the whole run's progress: steps done / total, ETA, images/s.

    In JSON mode one record per 0.5 s (``{"progress", "eta_s", "message": "fit step 3/30 ...",
    "images_per_s"}``); otherwise a text line on stderr every ``every_s`` seconds and at the end,
    e.g. ``pretrain: step 12/30 (40%), 9.6 images/s, ETA 0:35, loss 8.3121``. Images per step
    are ``datamodule.batch_size`` x world size x gradient accumulation.

    Args:
        name: what runs (the first word of each line).
        every_s: seconds between text lines (JSON mode: 0.5).
    """
    from lightning.pytorch import Callback, LightningModule, Trainer

    as_json = json_mode()
    interval = 0.5 if as_json else every_s

    class RunProgress(Callback):
        """Progress over all steps of the run (``Trainer.estimated_stepping_batches``)."""

        def __init__(self) -> None:
            self._start = 0.0
            self._last = 0.0
            self._first_step = 0

        def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
            self._start = self._last = time.perf_counter()
            self._first_step = trainer.global_step  # a resumed run counts its own speed
            if as_json:
                emit(0.0, f"{name}: starting")

        def _images_per_step(self, trainer: Trainer) -> int | None:
            batch = getattr(getattr(trainer, "datamodule", None), "batch_size", None)
            if not isinstance(batch, int):
                return None
            return batch * trainer.world_size * trainer.accumulate_grad_batches

        def on_train_batch_end(
            self, trainer: Trainer, pl_module: LightningModule, *args: Any
        ) -> None:
            now = time.perf_counter()
            total = trainer.estimated_stepping_batches
            step = trainer.global_step
            known = bool(total) and total != float("inf")
            if now - self._last < interval and not (known and step >= total):
                return
            self._last = now
            elapsed = now - self._start
            done = step - self._first_step
            eta = elapsed / done * (total - step) if known and done else None
            per_step = self._images_per_step(trainer)
            rate = per_step * done / elapsed if per_step and elapsed > 0 else None
            metrics = trainer.callback_metrics
            loss = metrics.get("train_loss", metrics.get("loss"))
            if as_json:
                text = f"{name} step {step}/{int(total)}" if known else f"{name} step {step}"
                if loss is not None:
                    text += f" loss {float(loss):.4f}"
                extra = {} if rate is None else {"images_per_s": round(rate, 2)}
                emit(
                    step / total if known else None,
                    text,
                    eta_s=eta,
                    elapsed_s=round(elapsed, 1),
                    **extra,
                )
                return
            parts = [
                f"step {step}/{int(total)} ({100 * step / total:.0f}%)" if known else f"step {step}"
            ]
            if rate is not None:
                parts.append(f"{rate:.1f} images/s")
            parts.append(f"ETA {format_duration(eta)}" if eta is not None else "ETA ?")
            if loss is not None:
                parts.append(f"loss {float(loss):.4f}")
            tqdm.std.tqdm.write(f"{name}: " + ", ".join(parts), file=sys.stderr)

        def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
            elapsed = time.perf_counter() - self._start
            if as_json:
                emit(1.0, f"{name}: done after {trainer.global_step} steps", eta_s=0.0)
            else:
                tqdm.std.tqdm.write(
                    f"{name}: done, {trainer.global_step} steps in {format_duration(elapsed)}",
                    file=sys.stderr,
                )

    return RunProgress()
