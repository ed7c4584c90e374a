"""DINOv3 pretraining and continued pretraining from a config (LightningCLI underneath).

:func:`pretrain` is what ``dinogeo pretrain`` runs (with the command-line arguments) and what the
demo and the tests call (with a dict from :func:`dinogeo.config.load_config`). The model is
:class:`~dinogeo.ssl.module.SSLTask` (``stage: ssl``, the default) or, for configs with
``stage: distill``, :class:`~dinogeo.ssl.distill_task.DistillTask`; the data
:class:`~dinogeo.ssl.datamodule.SSLDataModule`;
the band count and names of the data set the backbone's input. A preemption checkpoint callback,
the collapse alarm and the kNN probe are always present and configurable (``preemption.*``,
``collapse.*``, ``knn_probe.*``). On SIGTERM a checkpoint is saved and :data:`SIGTERM_STATUS`
returned; resume with ``ckpt_path: last``.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.exceptions import SIGTERMException

from dinogeo.config import build_cli
from dinogeo.errors import ConfigError
from dinogeo.ssl.checkpointing import PreemptionCheckpoint
from dinogeo.ssl.datamodule import SSLDataModule
from dinogeo.ssl.distill_task import DistillTask
from dinogeo.ssl.module import SSLTask
from dinogeo.ssl.monitor import CollapseMonitor, KNNProbe

__all__ = ["SIGTERM_STATUS", "STAGES", "PretrainCLI", "pretrain", "stage_of"]

#: exit status after a SIGTERM (128 + 15, what shells and schedulers expect)
SIGTERM_STATUS = 143

#: the LightningModule of each ``stage``
STAGES: dict[str, type] = {"ssl": SSLTask, "distill": DistillTask}


def stage_of(config: Mapping[str, Any] | Sequence[str]) -> str:
    """The ``stage`` a config dict or an argument list asks for (``ssl`` by default).

    A dict's ``stage`` key; in an argument list the last ``--stage`` flag, else the last
    ``--config`` file's key.

    Raises:
        ConfigError: for an unknown stage.
    """
    stage = "ssl"
    if isinstance(config, Mapping):
        stage = str(config.get("stage", stage))
    else:
        argv = list(config)
        for i, arg in enumerate(argv):
            value = (
                arg.split("=", 1)[1] if "=" in arg else (argv[i + 1] if i + 1 < len(argv) else "")
            )
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


def pretrain(config: Mapping[str, Any] | Sequence[str], *, prog: str = "dinogeo pretrain") -> int:
    """Pretrain (or continue pretraining) a backbone; the teacher is exported to ``export_path``.

    Args:
        config: a configuration dict (the YAML of ``dinogeo pretrain --config``, e.g. from
            :func:`dinogeo.config.load_config`), or command-line arguments
            (``["--config", "configs/ssl/default.yaml", "--model.optim.lr", "2e-4"]``).
        prog: the program name in help and error messages.

    Returns:
        0 when training finished, :data:`SIGTERM_STATUS` when a SIGTERM stopped it (a
        checkpoint was saved).
    """
    args: Any = dict(config) if isinstance(config, Mapping) else list(config)
    cli = build_cli(
        PretrainCLI,
        args,
        model_class=STAGES[stage_of(config)],
        datamodule_class=SSLDataModule,
        run=False,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"prog": prog},
    )
    try:
        cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=cli.config.ckpt_path)
    except SIGTERMException:
        print(
            f"{prog}: stopped by SIGTERM; a checkpoint was saved - resume with --ckpt_path last",
            file=sys.stderr,
        )
        return SIGTERM_STATUS
    return 0
