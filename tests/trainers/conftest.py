from pathlib import Path

import pytest
import yaml

from dinogeo._paths import config_text

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
