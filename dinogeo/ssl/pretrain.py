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

Output locations follow ``trainer.default_root_dir`` (``<root>``) when the config leaves them
unset: CSV and TensorBoard logs in ``<root>/csv`` and ``<root>/tensorboard``, checkpoints in
``<root>/checkpoints``, the backbone in ``<root>/backbone.safetensors``; a path given explicitly
is kept (``model.export_path: ""`` exports nothing). The skip report of the archive is written to ``<root>/skipped_files.csv``. At the end the
exported backbone's path is printed with its weight card summary.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import Namespace
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.exceptions import SIGTERMException

from dinogeo.config import build_cli
from dinogeo.errors import ConfigError, option_style
from dinogeo.progress import run_progress_callback
from dinogeo.ssl.checkpointing import PreemptionCheckpoint
from dinogeo.ssl.datamodule import SSLDataModule
from dinogeo.ssl.distill_task import DistillTask
from dinogeo.ssl.module import SSLTask
from dinogeo.ssl.monitor import CollapseMonitor, KNNProbe

__all__ = [
    "SIGTERM_STATUS",
    "STAGES",
    "PretrainCLI",
    "WORD_LISTS",
    "export_summary",
    "fill_output_locations",
    "join_list_words",
    "pretrain",
    "stage_of",
]

#: exit status after a SIGTERM (128 + 15, what shells and schedulers expect)
SIGTERM_STATUS = 143

#: the loggers of a run whose config sets no ``trainer.logger``: (class in lightning.pytorch.loggers, name)
DEFAULT_LOGGERS = (("CSVLogger", "csv"), ("TensorBoardLogger", "tensorboard"))

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

    def before_instantiate_classes(self) -> None:
        """Point unset output locations at ``trainer.default_root_dir``."""
        fill_output_locations(self.config)


def fill_output_locations(config: Any) -> None:
    """Put unset output locations under ``trainer.default_root_dir``.

    Unset ``trainer.logger``: a CSV logger (``<root>/csv``) and a TensorBoard logger
    (``<root>/tensorboard``); a ``ModelCheckpoint`` without ``dirpath``: ``<root>/checkpoints``;
    unset ``model.export_path``: ``<root>/backbone.safetensors``.

    Args:
        config: the parsed LightningCLI namespace (changed in place).
    """
    trainer = config.trainer
    root = Path(str(trainer.get("default_root_dir") or "."))
    if trainer.get("logger") is None:  # unset: CSV (metrics.csv) and TensorBoard under the root
        trainer["logger"] = [
            Namespace(
                class_path=f"lightning.pytorch.loggers.{cls}",
                init_args=Namespace(save_dir=str(root), name=name),
            )
            for cls, name in DEFAULT_LOGGERS
        ]
    for callback in trainer.get("callbacks") or []:
        name = str(callback.get("class_path", "")) if hasattr(callback, "get") else ""
        args = callback.get("init_args") if name.endswith("ModelCheckpoint") else None
        if args is not None and args.get("dirpath") is None:
            args["dirpath"] = str(root / "checkpoints")
    model = config.get("model")
    if model is not None and "export_path" in model and model.get("export_path") is None:
        model["export_path"] = str(root / "backbone.safetensors")


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
    args: Any = dict(config) if isinstance(config, Mapping) else join_list_words(list(config))
    # fixes in error messages: `--data.bands ...` for argument lists, `data.bands=...` for dicts
    with option_style("cli" if isinstance(args, list) else None, "data.", WORD_LISTS):
        cli = build_cli(
            PretrainCLI,
            args,
            model_class=STAGES[stage_of(config)],
            datamodule_class=SSLDataModule,
            run=False,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"prog": prog},
            # the whole-run progress line: steps / total, ETA, images/s (JSON with --progress json)
            trainer_defaults={"callbacks": [run_progress_callback("pretrain")]},
        )
        try:
            cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=cli.config.ckpt_path)
        except SIGTERMException:
            print(
                f"{prog}: stopped by SIGTERM; a checkpoint was saved - resume with --ckpt_path last",
                file=sys.stderr,
            )
            return SIGTERM_STATUS
    if cli.trainer.is_global_zero:
        print(export_summary(cli.model), file=sys.stderr)
    return 0


#: list options of the data that the command line also takes as separate words
WORD_LISTS = ("bands", "sources")


def join_list_words(argv: list[str]) -> list[str]:
    """``--data.bands B02 B03 B04`` -> ``--data.bands ["B02", "B03", "B04"]`` (and ``sources``).

    jsonargparse takes a list option as one YAML list; this also accepts the words that follow
    the option up to the next ``-``-prefixed argument. One YAML list (``'[B02, B03]'``), ``null``
    and the ``--data.bands=...`` form are left as they are.
    """
    out: list[str] = []
    i = 0
    flags = {f"--data.{name}" for name in WORD_LISTS}
    while i < len(argv):
        arg = argv[i]
        out.append(arg)
        i += 1
        if arg not in flags:
            continue
        j = i
        while j < len(argv) and not argv[j].startswith("-"):
            j += 1
        words = argv[i:j]
        if len(words) == 1 and (words[0].lstrip().startswith("[") or words[0] == "null"):
            continue  # one YAML list or null: jsonargparse's own form
        if words:
            out.append(json.dumps(words))
            i = j
    return out


def export_summary(model: Any) -> str:
    """Where the run's backbone was exported, with its weight card in one line (or why not)."""
    path = getattr(model, "export_path", None)
    weight_card = getattr(model, "weight_card", None)
    if not path or not Path(path).is_file() or weight_card is None:
        return "pretrain: no backbone exported (model.export_path unset or the run did not end)"
    card = weight_card()
    if card is None:
        return f"pretrain: backbone exported to {path}"
    return (
        f"pretrain: backbone exported to {path}\n"
        f"  weight card: {card.arch} (embed {card.embed_dim}, patch {card.patch_size}), "
        f"{card.in_chans} bands {' '.join(card.band_names)} of sensor {card.sensor} "
        f"(reflectance = DN x {card.scale:g} + {card.offset:g}), {card.source}, "
        f"config hash {card.config_hash[:12]}"
    )
