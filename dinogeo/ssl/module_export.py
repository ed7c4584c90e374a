"""Weight cards and the export of the EMA teacher backbone at the end of pretraining."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dinogeo.models.backbone import create_backbone
from dinogeo.models.card import WeightCard, save_backbone

if TYPE_CHECKING:
    from dinogeo.ssl.module import SSLTask

__all__ = ["export_teacher_backbone", "training_config", "weight_card_for"]

log = logging.getLogger(__name__)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def training_config(task: SSLTask) -> dict[str, Any]:
    """The run's configuration: the model's and the datamodule's hyperparameters (JSON)."""
    config: dict[str, Any] = {"model": dict(task.hparams)}
    trainer = task._trainer
    datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
    if datamodule is not None and getattr(datamodule, "hparams", None) is not None:
        config["data"] = dict(datamodule.hparams)
    if trainer is not None:
        config["trainer"] = {
            "max_steps": trainer.max_steps,
            "world_size": trainer.world_size,
            "accumulate_grad_batches": trainer.accumulate_grad_batches,
        }
    return dict(_jsonable(config))


def weight_card_for(task: SSLTask) -> WeightCard | None:
    """The weight card of the task's teacher backbone, or ``None`` without sensor information.

    Band names, sensor name, normalisation and scale/offset come from the datamodule's
    ``sensor`` (an :class:`~dinogeo.data.sensors.Sensor`); the config hash covers the model and
    data hyperparameters.
    """
    trainer = task._trainer
    datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
    sensor = getattr(datamodule, "sensor", None)
    if sensor is None:
        return None
    source = task.init_cfg.official_checkpoint or task.init_cfg.backbone or "scratch"
    return WeightCard.for_sensor(
        task.teacher_backbone,
        sensor,
        training_config=training_config(task),
        source=f"dinogeo pretrain (from {source})",
    )


def export_teacher_backbone(task: SSLTask, path: Path) -> Path | None:
    """Write the EMA teacher backbone and its weight card to ``path`` (``.safetensors``).

    Gathers the full state dict through the strategy (needed for FSDP; every rank must call
    this) and writes on global rank 0 only, atomically.

    Args:
        task: the trained task (attached to a trainer with a dinogeo datamodule).
        path: the output file.

    Returns:
        The path on rank 0 (``None`` on other ranks or without sensor information).
    """
    trainer = task.trainer
    state = trainer.strategy.lightning_module_state_dict()
    if not trainer.is_global_zero:
        return None
    card = weight_card_for(task)
    if card is None:
        log.warning("no datamodule sensor: the teacher backbone was not exported to %s", path)
        return None
    prefix = "teacher.backbone."
    hp = task.hparams
    backbone = create_backbone(
        hp["arch"],
        hp["in_chans"],
        img_size=hp["img_size"],
        drop_path_rate=hp["drop_path_rate"],
        rope_rescale_coords=hp["rope_rescale_coords"],
        **hp.get("backbone_kwargs", {}),
    )
    backbone.load_state_dict(
        {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    )
    save_backbone(path, backbone, card)
    log.info("teacher backbone exported to %s (config hash %s)", path, card.config_hash[:12])
    return path
