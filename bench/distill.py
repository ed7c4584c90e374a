"""Distillation benchmark: a smaller student of a ``bench/probe.py`` backbone, as good and faster?

1. Teacher: a backbone pretrained by ``bench/probe.py`` (ViT patch 2, width 96, depth 4, 10
   Sentinel-2 bands; its ``backbone.safetensors`` has no DINO/iBOT heads, so fresh heads are
   first warmed up on the frozen teacher). Default: the 19-minute probe backbone
   ``/tmp/dinogeo-artifacts/probe_backbone.safetensors`` when present, else
   ``runs/bench_probe/backbone.safetensors``.
2. Distil it with :class:`~dinogeo.ssl.distill_task.DistillTask` (DINO + iBOT with the student
   input unmasked + KoLeo, teacher targets shared, student EMA exported with a card recording the
   teacher) into a student of the same patch size and depth but a quarter of the width (24, one
   attention head) for a fixed CPU time budget, on the probe's pretraining images (the
   Aberystwyth image, whose labels are never used, and the Rufiji dates).
3. (a) The probe's frozen-feature protocol (``bench/probe.py``: checkerboard spatial split,
   last-4-block features by shift-and-stitch, logistic regression) on the Aberystwyth land cover
   for the teacher, the distilled student and the student architecture randomly initialised;
   prints student - teacher (target: >= -0.02).
   (b) ``dinogeo predict`` (``predict_raster``) throughput of a land-cover bundle (linear head on
   the frozen backbone; its weights do not change the speed) built on each backbone, on the
   Aberystwyth scene, windows of 128 px (4096 tokens at patch 2), overlap 16, batch 4; prints
   ``student/teacher speed`` (target: >= 3), both measured in this run.

Usage: python bench/distill.py [--teacher FILE] [--minutes 10] [--threads 1] [--out runs/bench_distill]
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import rasterio
import torch
from probe import (
    ABER,
    BACKBONE,
    BANDS,
    LABELS,
    checkerboard,
    constant_optim,
    cpu_trainer,
    dense_features,
    linear_probe_miou,
    make_datamodule,
    pretraining_sources,
)
from rasterio.windows import Window

from dinogeo._paths import shared_data_dir
from dinogeo.data.opener import open_source
from dinogeo.inference import predict_raster
from dinogeo.models.backbone import Backbone, create_backbone
from dinogeo.models.backbone_file import load_backbone
from dinogeo.models.bundle import ModelBundle, save_bundle
from dinogeo.models.card import WeightCard
from dinogeo.models.heads import HeadConfig as DenseHeadConfig
from dinogeo.models.heads import build_model
from dinogeo.models.task_card import load_task_card
from dinogeo.ssl.distill_config import StudentConfig, TeacherConfig
from dinogeo.ssl.distill_task import DistillTask
from dinogeo.ssl.task_config import DINOHeadConfig, LossConfig

ARTIFACT = Path("/tmp/dinogeo-artifacts/probe_backbone.safetensors")
STUDENT = {**BACKBONE, "embed_dim": 24, "num_heads": 1}  # same patch (2) and depth (4)
TILE, OVERLAP, BATCH = 128, 16, 4
TEACHER_TEMP = (0.01, 0.02)  # teacher temperature (start, after the head warm-up)


def distil(args: argparse.Namespace, sources: list[str]) -> tuple[DistillTask, int]:
    """Distil the teacher for the time budget; return the task and the number of steps."""
    head = DINOHeadConfig(out_dim=512, hidden_dim=256, bottleneck_dim=64)  # the probe's head sizes
    task = DistillTask(
        teacher=TeacherConfig(path=str(args.teacher), head_warmup_steps=args.head_warmup),
        students=[
            StudentConfig(
                name="student",
                arch="vit_test_patch16_dinov3",
                img_size=32,
                backbone_kwargs=dict(STUDENT),
                export_path=str(args.out / "student.safetensors"),
            )
        ],
        in_chans=len(BANDS),
        band_names=BANDS,
        dino_head=head,
        ibot_head=head,
        # a sharper teacher than the recipe's 0.04 -> 0.07: at those temperatures the fresh
        # heads' Sinkhorn-Knopp targets stay uniform (entropy ln K) for the few hundred steps a
        # CPU budget allows, and the students would learn nothing from them
        loss=LossConfig(
            teacher_temp_warmup=TEACHER_TEMP[0],
            teacher_temp=TEACHER_TEMP[1],
            teacher_temp_warmup_steps=args.head_warmup,
            local_weight=0.5,
        ),
        # v2-style constant schedules: the run length is the time budget, not a step count
        optim=constant_optim(warmup_steps=20, schedule_steps=100_000, layerwise_decay=0.99),
        seed=0,
    )
    trainer = cpu_trainer(args.out, minutes=args.minutes, steps=None)
    start = time.perf_counter()
    dm = make_datamodule(shared_data_dir(), args.batch_size, sources, args.loader_workers)
    trainer.fit(task, dm)
    minutes = (time.perf_counter() - start) / 60
    print(
        f"distilled {trainer.global_step} steps in {minutes:.1f} min "
        f"({min(args.head_warmup, trainer.global_step)} teacher-head warm-up steps first)"
    )
    return task, trainer.global_step


def probe_all(backbones: dict[str, Backbone], sensor: object) -> dict[str, float]:
    """The probe's test mIoU of each backbone on the Aberystwyth land cover."""
    shared = shared_data_dir()
    source = open_source(shared / ABER, sensor=sensor)
    image_np, _ = source.read_normalized(Window(0, 0, source.width, source.height))
    image = torch.from_numpy(image_np).float()
    with rasterio.open(shared / LABELS) as ds:
        labels = ds.read(1)
    train_mask = checkerboard(*labels.shape)
    return {
        name: linear_probe_miou(dense_features(backbone, image), labels, train_mask)
        for name, backbone in backbones.items()
    }


def bundle_for(backbone: Backbone, card: WeightCard, path: Path) -> Path:
    """A land-cover bundle (Aberystwyth's 4 classes, linear head) on a frozen backbone."""
    torch.manual_seed(0)
    task = load_task_card("land_cover_aberystwyth")
    head = DenseHeadConfig(type="segmentation", num_outputs=task.num_outputs, decoder="linear")
    save_bundle(
        path, ModelBundle(card=card, task=task, model=build_model(backbone, head), head=head)
    )
    return path


def throughput(bundle: Path, out: Path, rounds: int) -> float:
    """Pixels per second of ``predict_raster`` on the Aberystwyth scene (best of ``rounds``)."""
    src = shared_data_dir() / ABER
    with rasterio.open(src) as ds:
        pixels = ds.width * ds.height
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        predict_raster(bundle, src, out, tile=TILE, overlap=OVERLAP, batch_size=BATCH, workers=1,
                       overwrite=True, vectorize=False, progress=False)  # fmt: skip
        best = min(best, time.perf_counter() - start)
    return pixels / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = ARTIFACT if ARTIFACT.is_file() else Path("runs/bench_probe/backbone.safetensors")
    parser.add_argument("--teacher", type=Path, default=default, help="bench/probe.py backbone")
    parser.add_argument("--minutes", type=float, default=10.0, help="CPU distillation budget")
    parser.add_argument(
        "--student", type=Path, default=None, help="skip distillation: measure this student file"
    )
    parser.add_argument("--head-warmup", type=int, default=40, help="teacher-head warm-up steps")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--loader-workers", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2, help="predict runs per bundle (best)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench_distill"))
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    if args.minutes > 15:
        parser.error("--minutes is capped at 15 (the benchmark's CPU budget)")
    torch.set_num_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    args.out.mkdir(parents=True, exist_ok=True)
    teacher, t_card = load_backbone(args.teacher)
    print(
        f"teacher {args.teacher}: {t_card.arch} patch {teacher.patch_size}, width "
        f"{teacher.embed_dim}, depth {teacher.depth}, {teacher.blocks[0].attn.num_heads} heads; student: "
        f"patch {STUDENT['patch_size']}, width {STUDENT['embed_dim']}, depth {STUDENT['depth']}, "
        f"{STUDENT['num_heads']} head"
    )
    torch.manual_seed(0)
    sources = pretraining_sources(shared_data_dir())
    student_file = args.student
    if student_file is None:
        print(f"distilling for {args.minutes:g} min on {len(sources)} Sentinel-2 images")
        distil(args, sources)
        student_file = args.out / "student.safetensors"
    student, s_card = load_backbone(student_file)
    print(f"student with its weight card: {student_file} ({s_card.source})")
    torch.manual_seed(1)
    random_student = create_backbone(
        "vit_test_patch16_dinov3", len(BANDS), img_size=32, **STUDENT
    ).eval()
    dm = make_datamodule(shared_data_dir(), args.batch_size, sources)
    miou = probe_all({"teacher": teacher, "student": student, "random": random_student}, dm.sensor)
    print("\nAberystwyth land cover, probe protocol of bench/probe.py, test mIoU (4 classes)")
    print(f"  teacher (frozen)                          {miou['teacher']:.3f}")
    print(f"  distilled student (frozen)                {miou['student']:.3f}")
    print(f"  student architecture, random init         {miou['random']:.3f}")
    print(f"  student - teacher: {miou['student'] - miou['teacher']:+.3f} (target >= -0.02)")

    speeds = {}
    for name, backbone, card in (("teacher", teacher, t_card), ("student", student, s_card)):
        bundle = bundle_for(backbone, card, args.out / f"{name}_land_cover.safetensors")
        speeds[name] = throughput(bundle, args.out / f"{name}_land_cover.tif", args.rounds)
    print(
        f"\ndinogeo predict, land-cover bundle (linear head), Aberystwyth 512x512, tile {TILE} "
        f"overlap {OVERLAP} batch {BATCH}, {torch.get_num_threads()} thread(s)"
    )
    for name, value in speeds.items():
        print(f"  {name:<8s} {value:10,.0f} px/s")
    print(f"  student/teacher speed = {speeds['student'] / speeds['teacher']:.2f} (target >= 3)")


if __name__ == "__main__":
    main()
