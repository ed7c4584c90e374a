"""Generate distillation teachers: a tiny dinogeo backbone file and a ``dinogeo pretrain`` checkpoint.

Both hold the same tiny ViT (width 64, depth 4, patch 16, LayerScale 0.1 so that its random
features are not collapsed) for the 4-band Sentinel-2 L1C scene of ../shared/data, with a weight
card for the ``sentinel2_l1c`` sensor:

* ``teacher.safetensors``: the backbone and its card (no heads, as any backbone file);
* ``teacher.ckpt``: a Lightning checkpoint as ``dinogeo pretrain`` writes it: ``state_dict`` of
  an ``SSLTask`` (student, EMA ``teacher.backbone/dino_head/ibot_head``), the card under
  ``dinogeo_card`` and the backbone prefix under ``dinogeo_backbone_prefix``.

Run ``python tests/data/distill/data.py OUT_DIR`` to write them by hand; tests call
:func:`write_teachers` into ``tmp_path``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from dinogeo.data.sensors import load_sensor
from dinogeo.models.backbone_file import save_backbone
from dinogeo.models.card import WeightCard
from dinogeo.ssl.module import SSLTask
from dinogeo.ssl.task_config import DINOHeadConfig

S2_10M = "sentinel2-l1c-virginia-sattestdata/S2_18SVG_20160112_10m_B02-B03-B04-B08_crop.tif"
BANDS = ["B02", "B03", "B04", "B08"]
SENSOR = "sentinel2_l1c"
#: the teacher checkpoint's heads: K prototypes, hidden width, bottleneck
HEAD = DINOHeadConfig(out_dim=64, hidden_dim=32, bottleneck_dim=16)


def write_teachers(out_dir: Path, seed: int = 0) -> dict[str, Path]:
    """Write ``teacher.safetensors`` and ``teacher.ckpt`` (same backbone) into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    task = SSLTask(
        arch="vit_test_patch16_dinov3",
        in_chans=len(BANDS),
        band_names=BANDS,
        img_size=32,
        backbone_kwargs={"init_values": 0.1},
        dino_head=HEAD,
        ibot_head=HEAD,
    )
    sensor = load_sensor(SENSOR).select(BANDS)
    card = WeightCard.for_sensor(
        task.teacher_backbone, sensor, training_config={"fixture": "tests/data/distill/data.py"}
    )
    safetensors = out_dir / "teacher.safetensors"
    save_backbone(safetensors, task.teacher_backbone, card)
    ckpt = out_dir / "teacher.ckpt"
    torch.save(
        {
            "state_dict": task.state_dict(),
            "dinogeo_card": card.to_json(),
            "dinogeo_backbone_prefix": "teacher.backbone.",
            "global_step": 0,
        },
        ckpt,
    )
    return {"safetensors": safetensors, "ckpt": ckpt}


if __name__ == "__main__":
    print(write_teachers(Path(sys.argv[1] if len(sys.argv) > 1 else "distill_fixtures")))
