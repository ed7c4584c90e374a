"""What a distillation run writes: students' EMA backbones with cards, and full checkpoints.

Each student's EMA backbone is written with a card recording the teacher. On several processes
rank 0 writes the Lightning checkpoint but holds only its own student: the first rank of each
subgroup contributes its student's weights (and EMA) and optimizer state
(:func:`gather_student_states`); on resume each rank keeps its own (:func:`keep_local_states`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch.distributed as dist

from dinogeo.models.backbone import Backbone
from dinogeo.models.backbone_file import save_backbone
from dinogeo.models.card import WeightCard
from dinogeo.ssl.module_export import training_config

__all__ = ["gather_student_states", "keep_local_states", "student_card", "write_student"]

log = logging.getLogger(__name__)

#: the state-dict prefixes of the students and their EMA
STUDENT_PREFIXES = ("students", "students_ema")


def student_card(
    backbone: Backbone,
    sensor: Any,
    name: str,
    hparams: dict[str, Any],
    provenance: dict[str, Any],
    data: dict[str, Any] | None = None,
    trainer: dict[str, Any] | None = None,
) -> WeightCard:
    """The weight card of a student's EMA backbone, recording the teacher it was distilled from.

    Args:
        backbone: the student's EMA backbone.
        sensor: the data module's sensor (bands, normalisation).
        name: the student's name.
        hparams: the task's hyperparameters.
        provenance: the teacher's path, sha256 and architecture.
        data: the data module's hyperparameters.
        trainer: run facts (max steps, world size).
    """
    config = training_config(hparams, data, trainer)
    config["student"] = name
    config["teacher"] = training_config(provenance)["model"]  # JSON-safe values
    return WeightCard.for_sensor(
        backbone,
        sensor,
        training_config=config,
        source=(
            f"dinogeo distill from {provenance['path']} (sha256 {provenance['sha256'][:16]}, "
            f"{provenance['arch']}, width {provenance['embed_dim']}, depth "
            f"{provenance['depth']}, patch {provenance['patch_size']})"
        ),
    )


def write_student(path: Path, backbone: Backbone, card: WeightCard, name: str) -> Path:
    """Write a student's EMA backbone and card to ``path`` (``.safetensors``)."""
    save_backbone(path, backbone, card)
    log.info("student %s exported to %s", name, path)
    return path


def gather_student_states(
    checkpoint: dict[str, Any], state: dict[str, Any], name: str | None, world: int
) -> None:
    """Collect every subgroup's student weights and optimizer state into ``checkpoint``.

    Every rank calls it (an all-gather); ``name`` is this rank's student when it is the first
    rank of its subgroup, else ``None``.

    Args:
        checkpoint: the checkpoint Lightning is writing (updated in place).
        state: this rank's module state dict.
        name: the student this rank contributes, or ``None``.
        world: the number of processes.
    """
    mine: dict[str, Any] = {}
    if name is not None:
        keys = tuple(f"{p}.{name}." for p in STUDENT_PREFIXES)
        mine = {
            "state": {k: v.cpu() for k, v in state.items() if k.startswith(keys)},
            "optimizer": {name: checkpoint.get("optimizer_states", [None])[0]},
        }
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, mine)
    states: dict[str, Any] = {}
    for part in gathered:
        if part:
            checkpoint["state_dict"].update(part["state"])
            states.update(part["optimizer"])
    checkpoint["distill_optimizer_states"] = states


def keep_local_states(checkpoint: dict[str, Any], local: set[str]) -> None:
    """Drop the other subgroups' students from a checkpoint; take this rank's optimizer state."""
    state = checkpoint.get("state_dict", {})
    for key in [k for k in state if k.split(".")[0] in STUDENT_PREFIXES]:
        if key.split(".")[1] not in local:
            del state[key]
    saved = checkpoint.get("distill_optimizer_states")
    if saved and len(local) == 1 and local <= set(saved):
        checkpoint["optimizer_states"] = [saved[next(iter(local))]]
