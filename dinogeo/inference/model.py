"""The model side of prediction: the interface a model needs, loading it, hashing it, running it.

Any object with ``card`` (weight card), ``task`` (task card) and ``predict_batch(*images)`` can
predict (a :class:`~dinogeo.models.bundle.ModelBundle` fits). Its hash (weights, task, card)
goes into the resumable state, so an interrupted run resumes only with the same model.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from dinogeo.errors import CheckpointError
from dinogeo.models.task_card import TaskCard

__all__ = ["PredictModel", "load_model", "make_infer", "model_hash"]


@runtime_checkable
class PredictModel(Protocol):
    """What prediction needs from a model (a :class:`~dinogeo.models.bundle.ModelBundle` fits).

    ``card`` is the weight card (``band_names``, ``sensor``, ``mean``, ``std``, ``scale``,
    ``offset``, ``patch_size``), ``task`` the task card.
    """

    card: Any
    task: TaskCard

    def predict_batch(self, *images: torch.Tensor) -> torch.Tensor:
        """Per-pixel probabilities ``(B,K,H,W)`` or values ``(B,1,H,W)`` of normalised images."""
        ...


def load_model(
    model: str | Path | PredictModel, device: str | torch.device = "cpu"
) -> PredictModel:
    """Return a model ready for prediction on ``device``.

    Args:
        model: a model bundle path or an object with ``card``, ``task`` and ``predict_batch``.
        device: torch device.

    Returns:
        The model in eval mode on ``device``.

    Raises:
        CheckpointError: the object lacks the prediction interface.
    """
    if isinstance(model, str | Path):
        from dinogeo.models.bundle import load_bundle

        model = load_bundle(model)
    if not isinstance(model, PredictModel):
        raise CheckpointError(
            f"{type(model).__name__} cannot predict: pass a model bundle path or an object with "
            "'card', 'task' and 'predict_batch' (dinogeo.models.bundle.ModelBundle)"
        )
    net = getattr(model, "model", None)
    if isinstance(net, torch.nn.Module):
        net.to(device).eval()
    return model


def model_hash(model: PredictModel) -> str:
    """Return a SHA-256 of the model's weights, task card and weight card."""
    h = hashlib.sha256()
    net = getattr(model, "model", None)
    if isinstance(net, torch.nn.Module):
        for key, value in sorted(net.state_dict().items()):
            h.update(key.encode())
            h.update(value.detach().cpu().contiguous().numpy().tobytes())
    else:
        h.update(repr(model).encode())
    h.update(model.task.to_json().encode())
    h.update(repr(getattr(model, "card", None)).encode())
    return h.hexdigest()


def make_infer(model: PredictModel, device: str, channels: int) -> Callable[..., np.ndarray]:
    """Return ``infer(images) -> (B, channels, H, W)`` float32 running the model on ``device``.

    Raises (when called):
        CheckpointError: the model returns another shape than its task card says.
    """
    dev = torch.device(device)

    def infer(images: tuple[np.ndarray, ...]) -> np.ndarray:
        with torch.inference_mode():
            tensors = [torch.from_numpy(np.ascontiguousarray(im)).to(dev) for im in images]
            out = model.predict_batch(*tensors)
        if out.ndim != 4 or out.shape[1] != channels or out.shape[2:] != tensors[0].shape[2:]:
            raise CheckpointError(
                f"the model returned shape {tuple(out.shape)} for input {tuple(tensors[0].shape)}; "
                f"task {model.task.name!r} needs (B, {channels}, H, W): the bundle's head does not "
                "match its task card"
            )
        return out.float().cpu().numpy()

    return infer
