"""GPU check helper: flash attention in the DINOv3 ViT, the FSDP-exported backbone, the logs.

Usage: python bench/gpu/attention_export.py BACKBONE.safetensors IMAGE.tif OUT_DIR
(called by bench/gpu/check.sh after the FSDP runs).
"""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path

import rasterio
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from dinogeo.models import create_backbone, load_backbone

KEYS = (
    "loss/total",
    "loss/dino_global",
    "loss/ibot",
    "loss/koleo",
    "loss/gram",
    "sched/gram_weight",
    "health/teacher_entropy",
    "health/embedding_std",
    "health/mean_cosine",
)


def attention_kernels(dev: torch.device) -> None:
    """ViT-S/16 forward with the flash kernel against the math kernel (bf16)."""
    torch.manual_seed(0)
    backbone = create_backbone("vit_small_patch16_dinov3_qkvb", in_chans=10, img_size=224)
    backbone = backbone.to(dev).eval()
    x = torch.randn(64, 10, 224, 224, device=dev)

    def run(kernel: SDPBackend) -> tuple[torch.Tensor, float]:
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16), sdpa_kernel([kernel]):
            for _ in range(3):
                out = backbone.forward_features(x)["x_norm_patchtokens"]
            torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(10):
                out = backbone.forward_features(x)["x_norm_patchtokens"]
            torch.cuda.synchronize()
        return out.float(), (time.perf_counter() - start) / 10

    flash, t_flash = run(SDPBackend.FLASH_ATTENTION)
    math, t_math = run(SDPBackend.MATH)
    print(
        f"ViT-S/16 forward, batch 64 x 10 x 224^2, bf16: flash {t_flash * 1e3:.1f} ms, "
        f"math {t_math * 1e3:.1f} ms, math/flash {t_math / t_flash:.2f}; "
        f"max |flash - math| {(flash - math).abs().max().item():.3g}"
    )


def exported_backbone(path: str, image: str, dev: torch.device) -> None:
    """Load the backbone the FSDP run exported and embed a real 224-pixel chip."""
    backbone, card = load_backbone(path)
    print("exported backbone:", path, card.arch, "bands", card.band_names, "sensor", card.sensor)
    with rasterio.open(image) as src:
        img = torch.from_numpy(src.read(window=((0, 224), (0, 224))).astype("float32"))
    mean = torch.tensor(card.mean).view(-1, 1, 1)
    std = torch.tensor(card.std).view(-1, 1, 1)
    x = ((img * card.scale + card.offset - mean) / std)[None].to(dev)
    with torch.no_grad():
        out = backbone.to(dev).forward_features(x)
    shapes = {k: tuple(v.shape) for k, v in out.items() if torch.is_tensor(v)}
    print(
        "features of a real chip:", shapes, "cls std", round(out["x_norm_clstoken"].std().item(), 4)
    )


def summarise(out_dir: Path) -> None:
    """Print the logged losses and health metrics of the three runs."""
    for name in ("metrics_tiny.csv", "metrics_stage1.csv", "metrics_stage2.csv"):
        path = out_dir / name
        if not path.exists():
            print(name, "missing")
            continue
        rows = [r for r in csv.DictReader(path.open()) if r.get("loss/total")]
        print(name, f"{len(rows)} logged steps")
        for row in rows[:: max(1, len(rows) // 6)] + rows[-1:]:
            values = {k.split("/")[1]: round(float(row[k]), 4) for k in KEYS if row.get(k)}
            print("  step", row.get("step"), values)


def main() -> None:
    dev = torch.device("cuda")
    print("torch", torch.__version__, torch.cuda.get_device_name(dev))
    attention_kernels(dev)
    exported_backbone(sys.argv[1], sys.argv[2], dev)
    summarise(Path(sys.argv[3]))


if __name__ == "__main__":
    main()
