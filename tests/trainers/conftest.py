"""Shared fixtures of the head trainer tests: shipped configs made tiny, real scenes, tasks."""

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml
from lightning.pytorch import Trainer, seed_everything

from dinogeo._paths import config_text
from dinogeo.data.imagery_spec import DEFAULT_BACKBONE, ImagerySpec
from dinogeo.trainers.base import DenseTask
from dinogeo.trainers.canopy_height import CanopyHeightTask
from dinogeo.trainers.change import ChangeTask
from dinogeo.trainers.datamodule import LabeledChipDataModule
from dinogeo.trainers.land_cover import LandCoverTask
from dinogeo.trainers.synthetic_change import SyntheticChangeDataModule

#: the Aberystwyth Sentinel-2 crop (10 bands, reflectance x1000) and its 4-class map
ABER = "sentinel2-landcover-aberystwyth-rsgislib"
ABER_IMAGE = f"{ABER}/sen2_20210527_aber_10band_crop.tif"
ABER_LABELS = f"{ABER}/sen2_20210527_aber_cls_crop.tif"
S2_BANDS = ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"]
#: how the Aberystwyth crop is read, on the tiny test backbone
ABER_IMAGERY = ImagerySpec(DEFAULT_BACKBONE, "sentinel2_l2a", S2_BANDS, scale=1e-3, offset=0.0)
#: SWISSIMAGE RGB with a lidar canopy height model on its grid
SWISS = "swissimage-lidar-chm-detectree"
RGB_IMAGERY = ImagerySpec(DEFAULT_BACKBONE, "rgb_uint8")
#: the task card each trainer is tested with
TASK_CARDS = {
    LandCoverTask: "land_cover_aberystwyth",
    CanopyHeightTask: "canopy_height",
    ChangeTask: "change",
}

#: overrides that make every shipped config run in seconds with the tiny backbone
TINY = [
    "--data.init_args.backbone",
    "vit_test_patch16_dinov3",
    "--data.init_args.batch_size",
    "2",
    "--data.init_args.chip_size",
    "32",
    "--model.init_args.features",
    "16",
    "--model.init_args.image_skip",
    "4",
    "--trainer.max_steps",
    "2",
    "--trainer.limit_val_batches",
    "1",
    "--trainer.num_sanity_val_steps",
    "0",
    "--trainer.accelerator",
    "cpu",
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.enable_model_summary",
    "false",
]


def localise(name: str, shared: Path, folder: Path) -> Path:
    """Copy a shipped config with its ../shared/data paths pointing at the fixture folder."""
    text = config_text(f"finetune/{name}", shared)
    yaml.safe_load(text)  # stays valid YAML
    out = folder / f"{name}.yaml"
    out.write_text(text)
    return out


@pytest.fixture
def tiny() -> list[str]:
    return list(TINY)


@pytest.fixture
def localised():
    return localise


#: labelled scenes of the tests: 32 px chips in 128 px blocks
SCENES: dict[str, dict[str, Any]] = {
    "aber": {
        "image": ABER_IMAGE,
        "labels": ABER_LABELS,
        "task": "land_cover_aberystwyth",
        "train_stride": 32,
        "batch_size": 4,
        **ABER_IMAGERY.to_dict(),
    },
    "swiss": {
        "image": f"{SWISS}/ref-img.tif",
        "labels": f"{SWISS}/chm_0.5m_on_ref-img_grid_derived.tif",
        "task": "canopy_height",
        **RGB_IMAGERY.to_dict(),
    },
}


def scene_chips(shared: Path, name: str, **extra: Any) -> LabeledChipDataModule:
    """Labelled chips of one of :data:`SCENES` (32 px chips in 128 px blocks); keywords override."""
    args = {**SCENES[name], "chip_size": 32, "block_size": 128}
    args["image"], args["labels"] = str(shared / args["image"]), str(shared / args["labels"])
    return LabeledChipDataModule(**{**args, **extra})


def aber_pairs(shared: Path, **extra: Any) -> SyntheticChangeDataModule:
    """Synthetic change pairs pasted into the Aberystwyth crop (32 px chips); keywords override."""
    args: dict[str, Any] = {
        "images": [str(shared / ABER_IMAGE)],
        "task": "change",
        "chip_size": 32,
        **ABER_IMAGERY.to_dict(),
    }
    return SyntheticChangeDataModule(**{**args, **extra})


def head(cls: type[DenseTask] = LandCoverTask, **extra: Any) -> DenseTask:
    """A head of ``cls`` (8 features) on the Aberystwyth imagery, seeded; keywords override."""
    seed_everything(0, verbose=False)
    args: dict[str, Any] = {"task": TASK_CARDS[cls], "imagery": ABER_IMAGERY, "features": 8}
    return cls(**{**args, **extra})


@pytest.fixture
def aber_data(shared_data: Path) -> Callable[..., LabeledChipDataModule]:
    """Labelled chips of the Aberystwyth crop; keywords override."""
    return partial(scene_chips, shared_data, "aber")


@pytest.fixture
def swiss_data(shared_data: Path) -> Callable[..., LabeledChipDataModule]:
    """Canopy heights on the SWISSIMAGE crop; keywords override."""
    return partial(scene_chips, shared_data, "swiss")


@pytest.fixture
def aber_change_data(shared_data: Path) -> Callable[..., SyntheticChangeDataModule]:
    """Synthetic change pairs of the Aberystwyth crop; keywords override."""
    return partial(aber_pairs, shared_data)


@pytest.fixture
def make_task() -> Callable[..., DenseTask]:
    """Seeded heads on the Aberystwyth imagery (:func:`head`)."""
    return head


@pytest.fixture
def quiet_trainer() -> Callable[..., Trainer]:
    """A CPU trainer of ``steps`` steps without logs, checkpoints, bars or validation."""

    def make(steps: int, **extra: Any) -> Trainer:
        args: dict[str, Any] = {
            "max_steps": steps,
            "accelerator": "cpu",
            "logger": False,
            "enable_checkpointing": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "limit_val_batches": 0,
            "num_sanity_val_steps": 0,
        }
        return Trainer(**{**args, **extra})

    return make
