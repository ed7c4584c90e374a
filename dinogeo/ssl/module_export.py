"""The pretrained backbone as a file: pure functions over (state dict, hyperparameters, card).

:class:`~dinogeo.ssl.module.SSLTask` gathers the state dict through its strategy (FSDP shards
included) and the sensor from its datamodule, then calls these; they know nothing of Lightning,
so a script can export a teacher from any saved state dict.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from dinogeo.models.backbone import Backbone, create_backbone
from dinogeo.models.backbone_file import save_backbone
from dinogeo.models.card import WeightCard

__all__ = ["TEACHER_PREFIX", "backbone_from_state", "export_teacher_backbone", "training_config"]

log = logging.getLogger(__name__)

#: where the EMA teacher's backbone sits in an ``SSLTask`` state dict
TEACHER_PREFIX = "teacher.backbone."


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def training_config(
    model: Mapping[str, Any],
    data: Mapping[str, Any] | None = None,
    trainer: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The run's configuration as JSON: the model's, data module's and trainer's settings.

    Args:
        model: the task's hyperparameters.
        data: the data module's hyperparameters, if any.
        trainer: trainer facts (``max_steps``, ``world_size``...), if any.
    """
    config: dict[str, Any] = {"model": dict(model)}
    if data is not None:
        config["data"] = dict(data)
    if trainer is not None:
        config["trainer"] = dict(trainer)
    return dict(_jsonable(config))


def backbone_from_state(
    state: Mapping[str, torch.Tensor], hparams: Mapping[str, Any], prefix: str = TEACHER_PREFIX
) -> Backbone:
    """Build the task's backbone architecture and load the weights under ``prefix``.

    Args:
        state: a full (gathered) state dict of the task.
        hparams: the task's hyperparameters (``arch``, ``in_chans``, ``img_size``...).
        prefix: the key prefix of the backbone to take (the EMA teacher by default).
    """
    backbone = create_backbone(
        hparams["arch"],
        hparams["in_chans"],
        img_size=hparams["img_size"],
        drop_path_rate=hparams["drop_path_rate"],
        rope_rescale_coords=hparams["rope_rescale_coords"],
        **hparams.get("backbone_kwargs", {}),
    )
    backbone.load_state_dict(
        {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    )
    return backbone


def export_teacher_backbone(
    state: Mapping[str, torch.Tensor],
    hparams: Mapping[str, Any],
    card: WeightCard,
    path: str | Path,
) -> Path:
    """Write the EMA teacher backbone of ``state`` and its weight card to ``path`` (atomically).

    Args:
        state: a full (gathered) state dict of an ``SSLTask``.
        hparams: the task's hyperparameters.
        card: the weight card (``SSLTask.weight_card()``).
        path: the output ``.safetensors`` file.

    Returns:
        ``path``.
    """
    out = Path(path)
    save_backbone(out, backbone_from_state(state, hparams), card)
    log.info("teacher backbone exported to %s (config hash %s)", out, card.config_hash[:12])
    return out
