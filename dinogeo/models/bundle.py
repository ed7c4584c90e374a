"""Model bundles: one safetensors file holding a trained dense model and everything to use it.

A bundle stores the head weights and either the backbone weights or a reference to a backbone
file, plus JSON metadata: the backbone's weight card (bands, normalisation), the task card
(classes, units, output dtype), the head configuration and the training configuration. Loading
rebuilds the model from that metadata (:func:`dinogeo.models.heads.build_model`); nothing in
the file is executed.

``predict_batch(*images)`` takes normalised images in the weight card's band order (two for
change models) and returns class probabilities (B, K, H, W) or values (B, 1, H, W) in task units.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from dinogeo import __version__
from dinogeo.errors import BandMismatchError, CheckpointError, ConfigError
from dinogeo.models.backbone_file import load_backbone
from dinogeo.models.card import WeightCard, create_backbone_from_card
from dinogeo.models.heads import DenseModel, HeadConfig, build_model
from dinogeo.models.task_card import TaskCard

__all__ = ["ModelBundle", "load_bundle", "save_bundle"]

FORMAT = "dinogeo-bundle"
FORMAT_VERSION = "1"
_BACKBONE_PREFIX = "backbone."


@dataclass
class ModelBundle:
    """A trained dense model with its weight card, task card and configuration.

    Attributes:
        card: the backbone's weight card (input bands, order and normalisation).
        task: the task card (what the outputs mean).
        model: the dense model (``forward(x)`` or ``forward(x1, x2)`` for change).
        head: the head configuration that rebuilds ``model``.
        training_config: how the head was trained (JSON-compatible, informative).
        backbone_path: the referenced backbone file when the bundle does not embed its weights.
    """

    card: WeightCard
    task: TaskCard
    model: DenseModel
    head: HeadConfig
    training_config: dict[str, Any] = field(default_factory=dict)
    backbone_path: str | None = None

    @property
    def num_inputs(self) -> int:
        """Number of images ``predict_batch`` takes: 2 for change, else 1."""
        return 2 if self.task.kind == "change" else 1

    @property
    def patch_size(self) -> int:
        """Backbone patch size; inputs of any size are padded internally to a multiple of it."""
        return self.card.patch_size

    def to(self, device: torch.device | str) -> ModelBundle:
        """Move the model to ``device`` and return ``self``."""
        self.model.to(device)
        return self

    @torch.no_grad()
    def predict_batch(self, *images: Tensor) -> Tensor:
        """Predict a batch of normalised images.

        Args:
            *images: (B, C, H, W) float tensors in the weight card's band order and
                normalisation; two (date 1, date 2 on the same grid) for change bundles.

        Returns:
            Class probabilities (B, K, H, W) summing to 1 over K (segmentation, change), or
            values (B, 1, H, W) in task units clipped to the task's valid range (regression).

        Raises:
            ConfigError: wrong number of images or shapes.
            BandMismatchError: the channel count differs from the weight card's bands.
        """
        if len(images) != self.num_inputs:
            raise ConfigError(
                f"bundle for task {self.task.name!r} ({self.task.kind}) takes {self.num_inputs} "
                f"image batch(es), got {len(images)}"
            )
        for x in images:
            if x.ndim != 4:
                raise ConfigError(f"images must be (B, C, H, W), got shape {tuple(x.shape)}")
            if x.shape[1] != self.card.in_chans:
                raise BandMismatchError(
                    f"the images have {x.shape[1]} bands but the model expects "
                    f"{self.card.in_chans} ({self.card.band_names}); read the imagery with these "
                    "bands in this order"
                )
        first = next(self.model.parameters())
        device = images[0].device
        if first.device != device:
            self.model.to(device)
        self.model.eval()
        inputs = [x.to(dtype=first.dtype) for x in images]
        return self.finish_output(self.model(*inputs))

    def finish_output(self, out: Tensor) -> Tensor:
        """The model's raw output in task terms: class probabilities, or values clipped to range."""
        if self.task.is_classification:
            return out.float().softmax(dim=1)
        out = out.float()
        if self.task.valid_range is not None:
            out = out.clamp(*self.task.valid_range)
        return out


def _metadata(bundle: ModelBundle, backbone_ref: dict[str, str] | None) -> dict[str, str]:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "dinogeo_version": __version__,
        "weight_card": bundle.card.to_json(),
        "task_card": bundle.task.to_json(),
        "head_config": json.dumps(bundle.head.to_dict(), sort_keys=True),
        "training_config": json.dumps(bundle.training_config, sort_keys=True, default=str),
        "backbone_ref": json.dumps(backbone_ref or {}),
    }


def save_bundle(
    path: str | Path, bundle: ModelBundle, *, backbone_path: str | Path | None = None
) -> None:
    """Write a bundle as one safetensors file (atomically: temp file then rename).

    Args:
        path: output file (``.safetensors`` suffix recommended).
        bundle: the bundle to save.
        backbone_path: store a reference to this backbone file instead of the backbone
            weights (smaller bundles when the backbone stayed frozen). The file must hold
            exactly the bundle's backbone weights.

    Raises:
        CheckpointError: if ``backbone_path`` does not hold the bundle's backbone weights.
    """
    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in bundle.model.state_dict().items()}
    ref: dict[str, str] | None = None
    if backbone_path is not None:
        ref_backbone, ref_card = load_backbone(backbone_path)
        ours = bundle.model.backbone.state_dict()
        theirs = ref_backbone.state_dict()
        same = ours.keys() == theirs.keys() and all(
            torch.equal(ours[k].cpu(), theirs[k]) for k in ours
        )
        if not same:
            raise CheckpointError(
                f"{backbone_path} does not hold this model's backbone weights (the backbone was "
                "fine-tuned or another file was given): save the bundle without backbone_path "
                "so the weights are embedded"
            )
        state = {k: v for k, v in state.items() if not k.startswith(_BACKBONE_PREFIX)}
        ref = {"path": str(Path(backbone_path).resolve()), "config_hash": ref_card.config_hash}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(state, tmp, metadata=_metadata(bundle, ref))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_bundle(
    path: str | Path,
    *,
    backbone_path: str | Path | None = None,
    device: torch.device | str = "cpu",
) -> ModelBundle:
    """Load a bundle written by :func:`save_bundle` without executing code from the file.

    Args:
        path: the bundle file.
        backbone_path: backbone file to use when the bundle references one that moved.
        device: where to put the model.

    Returns:
        The bundle, model in eval mode.

    Raises:
        CheckpointError: missing/corrupt file, not a bundle, or weights that do not match.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"model bundle {path} does not exist: check the path")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            meta = handle.metadata() or {}
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    except (SafetensorError, OSError) as err:
        raise CheckpointError(
            f"{path} is not a readable model bundle ({err}); write bundles with "
            "'dinogeo fit' or dinogeo.models.bundle.save_bundle"
        ) from err
    if meta.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a dinogeo model bundle (format {meta.get('format')!r}); a backbone "
            "file loads with dinogeo.models.load_backbone"
        )
    try:
        card = WeightCard.from_json(meta["weight_card"], source_file=str(path))
        task = TaskCard.from_json(meta["task_card"], source=str(path))
        head = HeadConfig.from_dict(json.loads(meta["head_config"]))
        training = json.loads(meta.get("training_config") or "{}")
        ref = json.loads(meta.get("backbone_ref") or "{}")
    except (KeyError, json.JSONDecodeError, ConfigError) as err:
        raise CheckpointError(f"{path}: damaged bundle metadata ({err!r})") from err
    ref_path: str | None = None
    if ref:
        ref_path = str(backbone_path or ref["path"])
        if not Path(ref_path).is_file():
            raise CheckpointError(
                f"{path} references the backbone {ref_path}, which does not exist: pass "
                "backbone_path= (or --backbone) with the backbone file the head was trained on"
            )
        backbone, ref_card = load_backbone(ref_path)
        if ref_card.config_hash != ref.get("config_hash"):
            raise CheckpointError(
                f"{ref_path} is not the backbone {path} was trained on (config hash "
                f"{ref_card.config_hash[:12]} vs {str(ref.get('config_hash'))[:12]})"
            )
    else:
        backbone = create_backbone_from_card(card)
    model = build_model(backbone, head)
    expected = set(model.state_dict())
    if ref:
        expected = {k for k in expected if not k.startswith(_BACKBONE_PREFIX)}
    missing, unexpected = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not match the bundle's head config (missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}); the file is damaged or was edited"
        )
    try:
        model.load_state_dict(tensors, strict=not ref)
    except RuntimeError as err:
        raise CheckpointError(
            f"{path}: weights do not fit the model: {str(err).splitlines()[-1]}"
        ) from err
    model.requires_grad_(False)
    model.to(device).eval()
    return ModelBundle(card, task, model, head, training, ref_path)
