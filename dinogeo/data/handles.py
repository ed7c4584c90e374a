"""Open dataset handles, cached per process: opened lazily where they are read, never shared.

Sources keep no open file: they ask :func:`cached_handle` for one on each read. The cache is keyed
by ``(process id, key)`` in effect: a forked child forgets the parent's handles (and gets a fresh
lock) before its first read, so a source pickled into a DataLoader worker opens its own. At most
``DINOGEO_MAX_OPEN_FILES`` handles (default 256) stay open per process; the least recently used
are closed first, and all are closed at interpreter exit.
"""

from __future__ import annotations

import atexit
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

__all__ = ["MAX_OPEN_HANDLES", "cached_handle", "close_handles"]

#: most dataset handles kept open per process (least recently used are closed)
MAX_OPEN_HANDLES = int(os.environ.get("DINOGEO_MAX_OPEN_FILES", "256"))

_LOCK = threading.Lock()
_HANDLES: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
_HANDLES_PID = os.getpid()


def _after_fork_in_child() -> None:
    """A forked child forgets (never uses) the parent's handles and gets a fresh lock."""
    global _LOCK, _HANDLES_PID
    _LOCK = threading.Lock()
    _HANDLES.clear()
    _HANDLES_PID = os.getpid()


os.register_at_fork(after_in_child=_after_fork_in_child)


def cached_handle(key: tuple[Any, ...], opener: Callable[[], Any]) -> Any:
    """Return the open handle for ``key`` in this process, opening it with ``opener()``."""
    with _LOCK:
        if os.getpid() != _HANDLES_PID:  # belt and braces: never hand out another process's
            _after_fork_in_child()
        handle = _HANDLES.get(key)
        if handle is not None:
            _HANDLES.move_to_end(key)
            return handle
        handle = opener()
        _HANDLES[key] = handle
        while len(_HANDLES) > MAX_OPEN_HANDLES:
            _close(_HANDLES.popitem(last=False)[1])
        return handle


def _close(handle: Any) -> None:
    inner = getattr(handle, "src_dataset", None)  # a WarpedVRT owns the dataset it wraps
    handle.close()
    if inner is not None:
        inner.close()


def close_handles() -> None:
    """Close every dataset handle this process has cached (run at interpreter exit)."""
    with _LOCK:
        if os.getpid() == _HANDLES_PID:
            for handle in _HANDLES.values():
                _close(handle)
        _HANDLES.clear()


atexit.register(close_handles)
