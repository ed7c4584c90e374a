"""``dinogeo fit``: train a head on a (frozen) backbone and write one model bundle (LightningCLI).

Usage::

    dinogeo fit --config configs/finetune/land_cover_aberystwyth.yaml \
        [--bundle_path out.safetensors] [--trainer.max_steps 100] [--data.init_args.chip_size 64]

The config names a trainer (``model.class_path``: LandCoverTask, CanopyHeightTask, ChangeTask)
and a data module (``data.class_path``: LabeledChipDataModule, ChangePairDataModule,
SyntheticChangeDataModule). The data's task card, backbone, sensor, bands and scale/offset are
linked into the model, so band count and classes come from the data and the cards.
"""

from __future__ import annotations

import warnings

from lightning.pytorch import LightningDataModule
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from dinogeo.trainers.base import DenseTask

__all__ = ["FitCLI", "main"]

LINKED = ("task", "backbone", "sensor", "bands", "scale", "offset")


class FitCLI(LightningCLI):
    """LightningCLI with the data -> model links and a top-level ``--bundle_path``."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Link the data's task/backbone/sensor/bands into the model; add ``--bundle_path``."""
        parser.add_argument(
            "--bundle_path",
            type=str | None,
            default=None,
            help="write the trained model bundle here (overrides model.init_args.bundle_path)",
        )
        for key in LINKED:
            parser.link_arguments(f"data.init_args.{key}", f"model.init_args.{key}")

    def before_instantiate_classes(self) -> None:
        """Apply ``--bundle_path`` to the model."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        if config.get("bundle_path"):
            config["model"]["init_args"]["bundle_path"] = config["bundle_path"]


def main(argv: list[str]) -> int:
    """Run ``dinogeo fit`` with ``argv`` (LightningCLI arguments after ``fit``).

    Returns:
        0 on success (errors propagate as exceptions; the dispatcher formats dinogeo errors).
    """
    with warnings.catch_warnings():
        # main() always passes args; Lightning warns when sys.argv also holds arguments
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        _run(argv)
    return 0


def _run(argv: list[str]) -> None:
    from dinogeo.progress import lightning_callback

    json_progress = lightning_callback()  # None unless `dinogeo --progress json fit ...`
    defaults: dict[str, object] = {"logger": False, "enable_checkpointing": False}
    if json_progress is not None:
        defaults.update(callbacks=[json_progress], enable_progress_bar=False)
    FitCLI(
        DenseTask,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=["fit", *argv],
        save_config_callback=None,
        trainer_defaults=defaults,
        auto_configure_optimizers=False,
    )
