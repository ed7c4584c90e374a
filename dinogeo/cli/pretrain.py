"""``dinogeo pretrain``: DINOv3 pretraining and continued pretraining through LightningCLI.

Usage::

    dinogeo pretrain --config configs/ssl/default.yaml [--model.optim.lr 2e-4 ...]
    dinogeo pretrain --config configs/ssl/gram_anchor.yaml --ckpt_path runs/ssl/checkpoints/last.ckpt
    dinogeo pretrain --config configs/ssl/distill.yaml --model.teacher.path big.safetensors

The model is :class:`~dinogeo.ssl.module.SSLTask` (``stage: ssl``, the default) or, for configs
with ``stage: distill``, :class:`~dinogeo.ssl.distill_task.DistillTask`; the data :class:`~dinogeo.ssl.datamodule.
SSLDataModule`; the band count and names of the data set the backbone's input. A preemption
checkpoint callback, the collapse alarm and the kNN probe are always present and configurable
(``preemption.*``, ``collapse.*``, ``knn_probe.*``). On SIGTERM the command saves a checkpoint and
exits with status 143; resume with ``--ckpt_path last`` (or the printed path).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import yaml
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.exceptions import SIGTERMException

from dinogeo.errors import ConfigError
from dinogeo.ssl.checkpointing import PreemptionCheckpoint
from dinogeo.ssl.datamodule import SSLDataModule
from dinogeo.ssl.distill_task import DistillTask
from dinogeo.ssl.module import SSLTask
from dinogeo.ssl.monitor import CollapseMonitor, KNNProbe

__all__ = ["PretrainCLI", "main"]

#: exit status after a SIGTERM (128 + 15, what shells and schedulers expect)
SIGTERM_STATUS = 143

#: the LightningModule of each ``stage``
STAGES: dict[str, type] = {"ssl": SSLTask, "distill": DistillTask}


def stage_of(argv: list[str]) -> str:
    """The ``stage`` the arguments ask for: the last ``--stage`` flag, else the last config's key.

    Raises:
        ConfigError: for an unknown stage.
    """
    stage = "ssl"
    for i, arg in enumerate(argv):
        value = arg.split("=", 1)[1] if "=" in arg else (argv[i + 1] if i + 1 < len(argv) else "")
        if arg.split("=", 1)[0] == "--config" and Path(value).is_file():
            data = yaml.safe_load(Path(value).read_text()) or {}
            stage = str(data.get("stage", stage)) if isinstance(data, dict) else stage
        elif arg.split("=", 1)[0] == "--stage":
            stage = value
    if stage not in STAGES:
        raise ConfigError(f"stage: {stage!r} is not one of {sorted(STAGES)}")
    return stage


class PretrainCLI(LightningCLI):
    """LightningCLI with ``--ckpt_path``, the dinogeo callbacks and the band links."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Add ``--ckpt_path``, the always-on callbacks and the data -> model links."""
        parser.add_argument(
            "--ckpt_path",
            type=str | None,
            default=None,
            help="checkpoint to resume from ('last' finds the newest last.ckpt)",
        )
        parser.add_argument(
            "--stage",
            type=str,
            default="ssl",
            help="ssl (DINOv3 pretraining, SSLTask) or distill (DistillTask)",
        )
        parser.add_lightning_class_args(PreemptionCheckpoint, "preemption")
        parser.add_lightning_class_args(CollapseMonitor, "collapse")
        parser.add_lightning_class_args(KNNProbe, "knn_probe")
        parser.link_arguments("data.num_bands", "model.in_chans", apply_on="instantiate")
        parser.link_arguments("data.band_names", "model.band_names", apply_on="instantiate")


def main(argv: list[str]) -> int:
    """Run ``dinogeo pretrain``.

    Args:
        argv: the arguments after ``pretrain``.

    Returns:
        0 when training finished, 143 when it was stopped by SIGTERM (checkpoint saved).
    """
    with warnings.catch_warnings():
        # main() always passes args; Lightning warns when sys.argv also holds arguments
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        cli = PretrainCLI(
            STAGES[stage_of(argv)],
            SSLDataModule,
            args=argv,
            run=False,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"prog": "dinogeo pretrain"},
        )
    try:
        cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=cli.config.ckpt_path)
    except SIGTERMException:
        print(
            "dinogeo pretrain: stopped by SIGTERM; a checkpoint was saved - resume with "
            "--ckpt_path last",
            file=sys.stderr,
        )
        return SIGTERM_STATUS
    return 0
