"""Fixtures shared by the SSL tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import torch

CHECKPOINT_DATA = Path(__file__).resolve().parents[1] / "data" / "checkpoints" / "data.py"


@pytest.fixture(scope="session")
def ckpt_data() -> ModuleType:
    """tests/data/checkpoints/data.py: fake DINOv3 checkpoints in Meta's key layout."""
    spec = importlib.util.spec_from_file_location("ckpt_data", CHECKPOINT_DATA)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one intra-op thread avoids oversubscribing a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
