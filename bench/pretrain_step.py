"""Time per pretraining step on CPU: dinogeo's full DINOv3 step against two baselines.

For each configuration (ViT-S/16 and the tiny test ViT) and the same multi-crop batch:

(a) dinogeo: the full step of :class:`~dinogeo.ssl.module.SSLTask` - teacher forward on the 2
    global crops, DINO and iBOT heads, Sinkhorn-Knopp, student forward on masked globals and
    locals, DINO + iBOT + KoLeo losses, backward, per-module clipping, AdamW over the recipe's
    parameter groups, fused EMA update of backbone and both heads. Gram off, then Gram on
    (frozen Gram teacher on the 2x Gram crops) for the Gram overhead.
(b) compute floor: student backbone forward + backward on all crops and teacher backbone forward
    on the global crops; no heads, losses or optimizer.
(c) lightly 1.6 DINO: ``lightly.loss.DINOLoss``, ``DINOProjectionHead`` and
    ``update_momentum`` with the same backbone, crops, prototypes (K) and fused AdamW.

Steps of the variants are interleaved (a, b, c, a+Gram, a, b, ...) and the median is reported,
so load changes on a shared machine affect all variants alike.
Crops (CPU-sized): ViT-S global 112 / local 48, 4 locals, batch 8, Gram crops 224;
tiny ViT global 64 / local 32, 4 locals, batch 8, Gram 128.

``--crops spec`` uses the recipe's default crops instead (global 224, local 96 x8, Gram 448) for
ViT-S; ``--device cuda`` runs every variant on the GPU under bf16 autocast (as ``SSLTask`` does
there), synchronising before each timer read.

Usage: python bench/pretrain_step.py [--steps 3] [--out-dim 65536] [--threads 1]
       [--crops cpu|spec] [--batch N] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from lightly.loss import DINOLoss as LightlyDINOLoss
from lightly.models.modules import DINOProjectionHead
from lightly.models.utils import update_momentum
from torch import nn

from dinogeo.models.backbone import Backbone
from dinogeo.ssl.augment import MultiCropAugmentation
from dinogeo.ssl.collate import collate_multicrop
from dinogeo.ssl.ema import ema_update
from dinogeo.ssl.grad_clip import clip_gradients_per_module
from dinogeo.ssl.module import SSLTask
from dinogeo.ssl.module_step import ssl_losses
from dinogeo.ssl.param_groups import build_param_groups
from dinogeo.ssl.task_config import DINOHeadConfig, GramConfig

# head sizes: the recipe's (hidden 2048, bottleneck 256) for ViT-S, configs/ssl/default.yaml's
# (hidden 128, bottleneck 64, K 256) for the tiny ViT
CONFIGS = {
    "ViT-S/16": dict(
        arch="vit_small_patch16_dinov3_qkvb",
        glob=112,
        loc=48,
        n_local=4,
        batch=8,
        hidden=2048,
        bottleneck=256,
    ),
    "tiny": dict(
        arch="vit_test_patch16_dinov3",
        glob=64,
        loc=32,
        n_local=4,
        batch=8,
        hidden=128,
        bottleneck=64,
        out_dim=256,
    ),
}
# the recipe's default crops (configs/ssl/pretrain.yaml) for ViT-S: --crops spec
SPEC_CROPS = dict(glob=224, loc=96, n_local=8)
BANDS = 4


def make_batch(cfg: dict[str, Any], patch: int, device: torch.device) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(0)
    aug = MultiCropAugmentation(cfg["glob"], cfg["loc"], cfg["n_local"], gram_size=2 * cfg["glob"])
    images = [
        torch.randn(BANDS, 2 * cfg["glob"], 2 * cfg["glob"], generator=gen)
        for _ in range(cfg["batch"])
    ]
    batch = collate_multicrop([aug(im, generator=gen) for im in images], patch, generator=gen)
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


class DinogeoStep:
    """SSLTask's step without Lightning's loop: losses, backward, clipping, AdamW, EMA."""

    def __init__(self, cfg: dict[str, Any], out_dim: int, gram: bool) -> None:
        head = DINOHeadConfig(
            out_dim=out_dim, hidden_dim=cfg["hidden"], bottleneck_dim=cfg["bottleneck"]
        )
        self.task = SSLTask(
            arch=cfg["arch"],
            in_chans=BANDS,
            img_size=cfg["glob"],
            dino_head=head,
            ibot_head=head,
            gram=GramConfig(enabled=gram, from_initial=gram),
        )
        groups = []
        for name in ("backbone", "dino_head", "ibot_head"):
            groups += build_param_groups(
                ((f"{name}.{n}", p) for n, p in self.task.student[name].named_parameters()),
                n_blocks=self.task.student_backbone.depth,
                layer_decay=0.9,
                base_lr=1e-4,
                weight_decay=0.04,
            )
        for g in groups:
            g.pop("names")
        self.opt = torch.optim.AdamW(groups, lr=1e-4, fused=True)  # as SSLTask
        self.teacher = [p for _, p in sorted(self.task.teacher.named_parameters())]
        self.student = [p for _, p in sorted(self.task.student.named_parameters())]
        self.gram = gram

    def __call__(self, batch: dict[str, Any]) -> None:
        t = self.task
        out = ssl_losses(
            t.student,
            t.teacher,
            batch,
            dino_loss=t.dino_loss,
            ibot_loss=t.ibot_loss,
            loss_cfg=t.loss_cfg,
            teacher_temp=0.04,
            gram_teacher=t.gram_teacher,
            gram_cfg=t.gram_cfg,
            gram_weight=1.0 if self.gram else 0.0,
        )
        self.opt.zero_grad(set_to_none=True)
        out.loss.backward()
        clip_gradients_per_module(dict(t.student.items()), 3.0)
        self.opt.step()
        ema_update(self.teacher, self.student, 0.996)


class FloorStep:
    """Backbones only: student forward + backward on all crops, teacher forward on globals."""

    def __init__(self, student: Backbone) -> None:
        self.student = copy.deepcopy(student)
        self.teacher = copy.deepcopy(student).requires_grad_(False)

    def __call__(self, batch: dict[str, Any]) -> None:
        with torch.no_grad():
            self.teacher.forward_features(batch["global_crops"])
        g = self.student.forward_features(batch["global_crops"], masks=batch["masks"])
        loc = self.student.forward_features(batch["local_crops"])
        total = g["x_norm_clstoken"].mean() + g["x_norm_patchtokens"].mean()
        total = total + loc["x_norm_clstoken"].mean()
        self.student.zero_grad(set_to_none=True)
        total.backward()


class _LightlyDINO(nn.Module):
    def __init__(self, backbone: Backbone, out_dim: int, hidden: int, bottleneck: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = DINOProjectionHead(
            backbone.embed_dim, hidden, bottleneck, out_dim, freeze_last_layer=1
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone.forward_features(x)["x_norm_clstoken"])


class LightlyStep:
    """lightly's DINO recipe (loss with centering, projection head, momentum update)."""

    def __init__(self, student: Backbone, out_dim: int, cfg: dict[str, Any]) -> None:
        self.student = _LightlyDINO(
            copy.deepcopy(student), out_dim, cfg["hidden"], cfg["bottleneck"]
        )
        # lightly's head uses weight_norm, which cannot be deep-copied: build, then copy weights
        self.teacher = _LightlyDINO(
            copy.deepcopy(student), out_dim, cfg["hidden"], cfg["bottleneck"]
        )
        self.teacher.load_state_dict(self.student.state_dict())
        self.teacher.requires_grad_(False)
        self.criterion = LightlyDINOLoss(output_dim=out_dim, warmup_teacher_temp_epochs=5)
        # the same (fused) AdamW as dinogeo, so that a/c compares the recipes, not optimizers
        self.opt = torch.optim.AdamW(self.student.parameters(), lr=1e-4, fused=True)
        self.n_local = cfg["n_local"]

    def to(self, device: torch.device) -> LightlyStep:
        for module in (self.student, self.teacher, self.criterion):
            module.to(device)
        return self

    def __call__(self, batch: dict[str, Any]) -> None:
        update_momentum(self.student.backbone, self.teacher.backbone, m=0.996)
        update_momentum(self.student.head, self.teacher.head, m=0.996)
        with torch.no_grad():
            teacher_out = list(self.teacher(batch["global_crops"]).chunk(2))
        student_out = list(self.student(batch["global_crops"]).chunk(2))
        student_out += list(self.student(batch["local_crops"]).chunk(self.n_local))
        loss = self.criterion(teacher_out, student_out, epoch=0)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.student.head.cancel_last_layer_gradients(current_epoch=0)
        self.opt.step()


def bench(
    name: str, cfg: dict[str, Any], out_dim: int, steps: int, warmup: int, device: torch.device
) -> None:
    torch.manual_seed(0)
    full = DinogeoStep(cfg, out_dim, gram=False)
    gram = DinogeoStep(cfg, out_dim, gram=True)
    full.task.to(device)
    gram.task.to(device)
    backbone = full.task.student_backbone
    batch = make_batch(cfg, backbone.patch_size, device)
    variants: dict[str, Callable[[dict[str, Any]], None]] = {
        "a": full,
        "b": FloorStep(backbone),
        "c": LightlyStep(backbone, out_dim, cfg).to(device),
        "a+gram": gram,
    }
    cuda = device.type == "cuda"
    times: dict[str, list[float]] = {k: [] for k in variants}
    for step in range(warmup + steps):
        for key, fn in variants.items():
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            # bf16 autocast on CUDA, as SSLTask does there; fp32 on CPU, as SSLTask does there
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
                fn(batch)
            if cuda:
                torch.cuda.synchronize()
            if step >= warmup:
                times[key].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    crops = (
        f"global {cfg['glob']}, local {cfg['loc']} x{cfg['n_local']}, batch {cfg['batch']}, "
        f"gram {2 * cfg['glob']}, K={out_dim}, {BANDS} bands"
    )
    print(f"\n{name} ({crops}; {device}); median of {steps} steps after {warmup} warm-up")
    print(f"  (a) dinogeo full step (Gram off)  {med['a'] * 1000:9.1f} ms")
    print(f"  (b) compute floor (backbones)     {med['b'] * 1000:9.1f} ms")
    print(f"  (c) lightly DINO step             {med['c'] * 1000:9.1f} ms")
    print(f"  a/b = {med['a'] / med['b']:.2f}   (target <= 1.3)")
    print(f"  a/c = {med['a'] / med['c']:.2f}   (target <= 1.3)")
    print(
        f"  Gram anchoring on: {med['a+gram'] * 1000:.1f} ms, overhead x{med['a+gram'] / med['a']:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant (ViT-S)")
    parser.add_argument("--out-dim", type=int, default=65536, help="prototypes K of every head")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--only", choices=sorted(CONFIGS), default=None)
    parser.add_argument(
        "--crops", choices=["cpu", "spec"], default="cpu", help="ViT-S crops: CPU-sized or recipe"
    )
    parser.add_argument("--batch", type=int, default=None, help="images per step (ViT-S)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        where = f"{torch.cuda.get_device_name(device)}, bf16 autocast"
    else:
        where = f"{args.threads} thread(s), CPU"
    print(f"torch {torch.__version__}, {where}")
    for name, cfg in CONFIGS.items():
        if args.only and name != args.only:
            continue
        if name == "tiny":
            bench(name, cfg, cfg["out_dim"], steps=4 * args.steps, warmup=2, device=device)
            continue
        cfg = dict(cfg, **(SPEC_CROPS if args.crops == "spec" else {}))
        if args.batch:
            cfg["batch"] = args.batch
        warmup = 3 if device.type == "cuda" else 1
        bench(name, cfg, args.out_dim, steps=args.steps, warmup=warmup, device=device)


if __name__ == "__main__":
    main()
