"""Preemption checkpoints, exact mid-epoch resume and the export of the trained backbone.

Exact resume rests on three pieces:

* every random draw of the data pipeline is a pure function of ``(seed, epoch, position)``
  (:func:`sample_seed`, :class:`SeededRNG`), so it does not depend on the number of workers,
  on prefetching or on where a run was interrupted;
* :class:`ResumableSampler` wraps the archive's (distributed-aware) chip sampler and skips the
  samples an interrupted epoch already consumed;
* the model reseeds the global torch generator from ``(seed, global_step, rank)`` at every step
  (drop path, RoPE jitter), and all schedules are functions of ``global_step``.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch.utils.data import DistributedSampler, Sampler

__all__ = [
    "PreemptionCheckpoint",
    "ResumableSampler",
    "SeededRNG",
    "sample_seed",
]

log = logging.getLogger(__name__)

_MASK64 = (1 << 63) - 1


def sample_seed(*keys: int) -> int:
    """Mix integers (seed, epoch, position, ...) into one well-spread 63-bit seed.

    Args:
        *keys: the integers identifying one random draw.

    Returns:
        A non-negative integer usable with ``torch.manual_seed``.
    """
    digest = hashlib.blake2b(",".join(str(int(k)) for k in keys).encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "little") & _MASK64


class SeededRNG:
    """Context manager running a block with torch, numpy and ``random`` seeded from ``seed``.

    The previous generator states are restored on exit, so the surrounding code's random
    stream is unaffected (CPU generators only; data workers never touch CUDA).

    Args:
        seed: the seed of the block (e.g. from :func:`sample_seed`).
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._torch_state: torch.Tensor | None = None
        self._np_state: Any = None
        self._py_state: Any = None

    def __enter__(self) -> SeededRNG:
        self._torch_state = torch.get_rng_state()
        self._np_state = np.random.get_state()
        self._py_state = random.getstate()
        torch.random.default_generator.manual_seed(self.seed)
        np.random.seed(self.seed % (2**32))
        random.seed(self.seed)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._torch_state is not None:
            torch.set_rng_state(self._torch_state)
        np.random.set_state(self._np_state)
        random.setstate(self._py_state)


class ResumableSampler(DistributedSampler):  # type: ignore[type-arg]
    """Wrap a chip sampler so that an interrupted epoch resumes where it stopped.

    It yields ``(epoch, position, item)`` for each ``item`` of the wrapped sampler, so the
    dataset can derive every random draw from ``(seed, epoch, position)``. It subclasses
    ``DistributedSampler`` only so that Lightning recognises it as already distributed and
    keeps it (the wrapped sampler shards the archive across ranks itself); none of the
    parent's logic is used.

    Args:
        base: the sampler to wrap (e.g. ``RandomChipSampler``); ``set_epoch`` is forwarded.
    """

    def __init__(self, base: Sampler[Any]) -> None:  # noqa: D107 - documented on the class
        self.base = base
        self.epoch = 0
        self._skip_epoch = -1
        self._skip = 0

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch (called by Lightning before each epoch) and forward it."""
        self.epoch = int(epoch)
        if hasattr(self.base, "set_epoch"):
            self.base.set_epoch(epoch)

    def skip(self, epoch: int, n_samples: int) -> None:
        """Skip the first ``n_samples`` items the next time ``epoch`` is iterated."""
        self._skip_epoch, self._skip = int(epoch), int(n_samples)

    def __iter__(self) -> Iterator[tuple[int, int, Any]]:
        epoch = self.epoch
        start = self._skip if self._skip_epoch == epoch else 0
        self._skip_epoch, self._skip = -1, 0
        for position, item in enumerate(self.base):
            if position >= start:
                yield epoch, position, item


class PreemptionCheckpoint(pl.Callback):
    """Save a full checkpoint when the run is stopped by SIGTERM (preemption, ``scancel``).

    Lightning turns SIGTERM into a ``SIGTERMException`` once the running step has finished (on
    every rank); this callback then writes a complete training checkpoint (weights, optimizer,
    loops, data position) so that ``--ckpt_path last`` continues exactly.

    Args:
        dirpath: folder of the checkpoint; default: the ``ModelCheckpoint`` folder, or
            ``<default_root_dir>/checkpoints``.
        filename: file name; the default ``last.ckpt`` is what ``ckpt_path="last"`` finds.
    """

    def __init__(self, dirpath: str | None = None, filename: str = "last.ckpt") -> None:
        self.dirpath = dirpath
        self.filename = filename
        self.saved_path: Path | None = None

    def checkpoint_path(self, trainer: pl.Trainer) -> Path:
        """Where the preemption checkpoint goes for this trainer."""
        if self.dirpath is not None:
            folder = Path(self.dirpath)
        elif trainer.checkpoint_callback is not None and getattr(
            trainer.checkpoint_callback, "dirpath", None
        ):
            folder = Path(str(trainer.checkpoint_callback.dirpath))  # type: ignore[attr-defined]
        else:
            folder = Path(trainer.default_root_dir) / "checkpoints"
        return folder / self.filename

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        """Write the checkpoint if the exception is Lightning's SIGTERM exit."""
        if not isinstance(exception, SIGTERMException):
            return
        path = self.checkpoint_path(trainer)
        trainer.save_checkpoint(path)
        self.saved_path = path
        if trainer.is_global_zero:
            log.warning(
                "SIGTERM received at step %d: checkpoint saved to %s; resume with --ckpt_path %s",
                trainer.global_step,
                path,
                path,
            )
