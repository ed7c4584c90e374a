"""Train a head on a (frozen) backbone from a config and write one model bundle.

:func:`fit` is what ``dinogeo fit`` runs (with the command-line arguments) and what the demo,
the benchmarks and the tests call (with a dict from :func:`dinogeo.config.load_config`). The
config names a trainer (``model.class_path``: LandCoverTask, CanopyHeightTask, ChangeTask) and
a data module (``data.class_path``: LabeledChipDataModule, ChangePairDataModule,
SyntheticChangeDataModule). The data's task card and its imagery (backbone, sensor, bands,
scale/offset: one :class:`~dinogeo.data.imagery_spec.ImagerySpec`) are linked into the model, so
band count and classes come from the data and the cards.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lightning.pytorch import LightningDataModule
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from dinogeo.config import build_cli
from dinogeo.data.imagery_spec import ImagerySpec
from dinogeo.errors import ConfigError
from dinogeo.progress import lightning_callback
from dinogeo.trainers.base import DEFAULT_IMAGERY, DenseTask

__all__ = ["FitCLI", "fit"]


class FitCLI(LightningCLI):
    """LightningCLI with the data -> model links and a top-level ``--bundle_path``."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Link the data's task and imagery into the model; add ``--bundle_path``."""
        parser.add_argument(
            "--bundle_path",
            type=str | None,
            default=None,
            help="write the trained model bundle here (overrides model.init_args.bundle_path)",
        )
        parser.link_arguments("data.init_args.task", "model.init_args.task")
        # the built data module's ImagerySpec; given as its fields, from which the parser
        # rebuilds the model's ``imagery`` group
        parser.link_arguments(
            "data.imagery",
            "model.init_args.imagery",
            compute_fn=ImagerySpec.to_dict,
            apply_on="instantiate",
        )

    def before_instantiate_classes(self) -> None:
        """Apply ``--bundle_path`` to the model; refuse imagery options set on the model.

        Raises:
            ConfigError: ``model.init_args.imagery`` was set (the data module's is linked in).
        """
        config = self.config[self.subcommand] if self.subcommand else self.config
        given = config["model"]["init_args"].get("imagery")
        if given is not None and ImagerySpec(**dict(vars(given))) != DEFAULT_IMAGERY:
            raise ConfigError(
                "model.init_args.imagery is linked from the data module and cannot be set: set "
                "data.init_args.backbone, sensor, bands, scale and offset instead"
            )
        if config.get("bundle_path"):
            config["model"]["init_args"]["bundle_path"] = config["bundle_path"]


def fit(config: Mapping[str, Any] | Sequence[str]) -> DenseTask:
    """Train the configured head and write its bundle (``bundle_path``).

    Args:
        config: a configuration dict (the YAML of ``dinogeo fit --config``, e.g. from
            :func:`dinogeo.config.load_config`), or command-line arguments
            (``["--config", "land_cover.yaml", "--trainer.max_steps", "100"]``).

    Returns:
        The trained task (its ``bundle_path`` holds the bundle when one was configured).
    """
    args: Any = dict(config) if isinstance(config, Mapping) else ["fit", *config]
    if isinstance(config, Mapping):
        args = {"subcommand": "fit", "fit": args}
    json_progress = lightning_callback()  # None unless `dinogeo --progress json fit ...`
    defaults: dict[str, object] = {"logger": False, "enable_checkpointing": False}
    if json_progress is not None:
        defaults.update(callbacks=[json_progress], enable_progress_bar=False)
    cli = build_cli(
        FitCLI,
        args,
        model_class=DenseTask,
        datamodule_class=LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_callback=None,
        trainer_defaults=defaults,
        auto_configure_optimizers=False,
    )
    task: DenseTask = cli.model
    return task
