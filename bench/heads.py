"""Heads on a frozen backbone vs per-pixel baselines, on real data; prints a markdown table.

Tasks (all on ../shared/data, CPU, about 15 minutes with the defaults):

1. land cover, Aberystwyth Sentinel-2 crop, 4 classes, held-out spatial blocks;
2. land cover, North Carolina Landsat 7: trained from the 1996 polygons, evaluated on the 1996 points;
3. canopy height, SWISSIMAGE RGB + LiDAR CHM, held-out spatial blocks (MAE, RMSE, R2, bias);
4. change, synthetic pairs (real patches pasted into date 2) trained on Aberystwyth and
   evaluated on pairs built from a held-out scene (Rufiji 2016-07-10);
5. Rufiji consistency: change predicted between two clear dates vs land-cover flips predicted by a
   land-cover head trained on the first date with the 1997 map (held-out blocks for its accuracy).

Each head is compared with a per-pixel baseline on the normalised raw bands (softmax regression /
ridge regression; for change: softmax regression on [date 1, date 2, |difference|]) measured on the
same pixels, and with a randomly initialised backbone. A pretrained backbone is used when given
(``--backbone FILE`` or ``$DINOGEO_BACKBONE``); the heads then run twice: on it and on the same
architecture randomly initialised. A backbone whose bands differ from a task's sensor (a
Sentinel-2 backbone on Landsat 7 or RGB) is carried over with ``dinogeo.models.adapt_backbone``
(matching bands keep their filters).

Usage: ``python bench/heads.py [--backbone FILE] [--steps 120] [--tasks aber,nc,chm,change,rufiji]``
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import rasterio
import torch
import yaml
from lightning.pytorch import Trainer, seed_everything
from rasterio.windows import Window

from dinogeo._paths import config_text, resource_dir, shared_data_dir
from dinogeo.data.sensors import load_sensor
from dinogeo.labels import IGNORE_INDEX
from dinogeo.models import (
    WeightCard,
    adapt_backbone_file,
    create_backbone_from_card,
    load_backbone,
    save_backbone,
)
from dinogeo.models.bundle import ModelBundle, load_bundle
from dinogeo.models.task_card import load_task_card
from dinogeo.trainers.baselines import fit_softmax_regression
from dinogeo.trainers.canopy_height import CanopyHeightTask
from dinogeo.trainers.change import ChangeTask
from dinogeo.trainers.datamodule import LabeledChipDataModule
from dinogeo.trainers.evaluate import evaluate_bundle
from dinogeo.trainers.imagery import ImageReader
from dinogeo.trainers.land_cover import LandCoverTask
from dinogeo.trainers.metrics import TaskMetrics
from dinogeo.trainers.synthetic_change import SyntheticChangeDataModule

warnings.filterwarnings("ignore")
CONFIGS = resource_dir("configs") / "finetune"
RUFIJI = "sentinel2-timeseries-rufiji-rsgislib"
S2_BANDS = ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"]
DATE_A, DATE_B = "20160710", "20190615"


def config(name: str, shared: Path) -> tuple[dict, dict, str]:
    text = config_text(f"finetune/{name}", shared)
    cfg = yaml.safe_load(text)
    return (
        dict(cfg["model"]["init_args"]),
        dict(cfg["data"]["init_args"]),
        cfg["model"]["class_path"],
    )


def fit(task_cls, model_args: dict, dm, steps: int, out: Path) -> tuple[ModelBundle, float]:
    seed_everything(0, verbose=False)
    model = task_cls(**model_args, bundle_path=str(out))
    trainer = Trainer(
        max_steps=steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )
    start = time.time()
    trainer.fit(model, dm)
    return load_bundle(out), time.time() - start


def task_args(name: str, shared: Path, args, **data_extra) -> tuple[dict, dict]:
    """Model and data arguments of a shipped finetune config, sized for this benchmark."""
    model_args, data_args, _ = config(name, shared)
    data_args.update(
        batch_size=args.batch_size, chips_per_epoch=args.batch_size * args.steps, **data_extra
    )
    model_args.update(features=args.features)
    return model_args, data_args


def fit_on(task_cls, dm_cls, model_args: dict, data_args: dict, backbone: str, args, out: Path):
    """Fit one head on ``backbone`` (adapted to the task's sensor); ``data_args`` is updated."""
    data_args["backbone"] = for_task(backbone, data_args, out.parent)
    dm = dm_cls(**data_args)
    dm.setup("fit")
    bundle, secs = fit(task_cls, {**model_args, **linked(data_args)}, dm, args.steps, out)
    return dm, bundle, secs


def linked(data: dict) -> dict:
    return {k: data.get(k) for k in ("task", "backbone", "sensor", "bands", "scale", "offset")}


# ----------------------------------------------------------------- per-pixel baselines
def softmax_regression(x: np.ndarray, y: np.ndarray, k: int, l2: float = 1e-3) -> torch.nn.Linear:
    """Multinomial logistic regression, full-batch L-BFGS, balanced class weights."""
    return fit_softmax_regression(x, y, k, l2=l2)


def classify(layer: torch.nn.Linear, x: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return layer(torch.from_numpy(x).float())


def pixels(image: np.ndarray) -> np.ndarray:
    return image.reshape(image.shape[0], -1).T


def full(reader: ImageReader) -> tuple[np.ndarray, np.ndarray]:
    return reader.read(Window(0, 0, reader.width, reader.height))


def class_metrics(task, scores: torch.Tensor, target: np.ndarray) -> dict:
    """scores (N, K), target (N,) class indices."""
    metrics = TaskMetrics(task)
    metrics.update(
        scores.T[None, :, None, :], torch.from_numpy(target.astype(np.int64))[None, None, :]
    )
    return metrics.compute()


def write_like(path: Path, ref: Path, data: np.ndarray, nodata: float) -> Path:
    with rasterio.open(ref) as src:
        profile = {
            "driver": "GTiff",
            "width": src.width,
            "height": src.height,
            "count": 1,
            "dtype": data.dtype.name,
            "crs": src.crs,
            "transform": src.transform,
            "nodata": nodata,
        }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
    return path


def predict_full(bundle: ModelBundle, *images: np.ndarray) -> np.ndarray:
    tensors = [torch.from_numpy(im)[None] for im in images]
    return bundle.predict_batch(*tensors)[0].numpy()


# ----------------------------------------------------------------- tasks
def segmentation_block_task(
    name: str, shared: Path, backbones: list[str], args, tmp: Path
) -> list[dict]:
    model_args, data_args = task_args(name, shared, args)
    rows = []
    task = load_task_card(data_args["task"])
    for i, backbone in enumerate(backbones):
        dm, bundle, secs = fit_on(
            LandCoverTask,
            LabeledChipDataModule,
            model_args,
            data_args,
            backbone,
            args,
            tmp / f"{name}_{i}.safetensors",
        )
        split = dm.splits[0]
        reader = dm.train_set.readers[0]
        labels = dm.train_set.labels[0]
        target = labels.read(Window(0, 0, reader.width, reader.height))
        image, valid = full(reader)
        if i == 0:  # baseline on the same pixels, once
            ok = (target != IGNORE_INDEX) & valid
            train, val = ok & split.mask("train"), ok & split.mask("val")
            x = pixels(image)
            layer = softmax_regression(
                x[train.ravel()], target[train].astype(np.int64), task.num_outputs
            )
            m = class_metrics(task, classify(layer, x[val.ravel()]), target[val])
            rows.append(
                {
                    "task": name,
                    "method": "per-pixel softmax regression (raw bands)",
                    **m,
                    "secs": 0.0,
                }
            )
        masked = np.where(
            split.mask("val") & (target != IGNORE_INDEX), target.astype(np.int64) + 0, -1
        )
        values = np.where(
            masked >= 0, np.asarray(task.class_values)[masked.clip(0)], task.nodata or 0
        )
        lab = write_like(
            tmp / f"{name}_val.tif",
            Path(data_args["image"]),
            values.astype(np.uint8),
            task.nodata or 0,
        )
        m = evaluate_bundle(bundle, data_args["image"], lab, chip_size=128, progress=False)
        rows.append({"task": name, "method": method_name(backbone, model_args), **m, "secs": secs})
    return rows


def random_twin(path: str, tmp: Path) -> str:
    """The architecture and weight card of a backbone file, randomly initialised (seed 0)."""
    _, card = load_backbone(path)
    torch.manual_seed(0)
    twin = create_backbone_from_card(card, initialise=True)
    data = card.to_dict()
    data.update(
        training_config={"init": "random", "architecture_of": card.config_hash},
        config_hash="",
        source="random-init",
    )
    out = tmp / f"random-init_{Path(path).name}"
    save_backbone(out, twin, WeightCard.from_dict(data))
    return str(out)


def for_task(backbone: str, data_args: dict, tmp: Path) -> str:
    """The backbone file itself, or a copy adapted to the task's sensor when the bands differ."""
    if not Path(backbone).suffix:
        return backbone  # an architecture name: random init for the task's sensor
    _, card = load_backbone(backbone)
    spec = load_sensor(data_args["sensor"])
    if data_args.get("bands"):
        spec = spec.select(data_args["bands"])
    if [b.lower() for b in card.band_names] == [b.lower() for b in spec.band_names]:
        return backbone
    out = tmp / f"{Path(backbone).stem}_to_{spec.name}.safetensors"
    if not out.exists():
        adapt_backbone_file(backbone, spec, out)
    return str(out)


def method_name(backbone: str, model_args: dict) -> str:
    path = Path(backbone)
    if not path.suffix:
        kind = f"random-init {backbone}"
    elif path.name.startswith("random-init_"):
        kind = "same ViT, random init"
    else:
        kind = f"pretrained {path.stem.split('_to_')[0]}"
        if "_to_" in path.stem:
            kind += f" (bands adapted to {path.stem.split('_to_')[1]})"
    return f"{kind} (frozen) + {model_args.get('decoder', 'dpt')} head"


def nc_task(shared: Path, backbones: list[str], args, tmp: Path) -> list[dict]:
    name = "land_cover_nc_polygons"
    model_args, data_args = task_args(name, shared, args)
    task = load_task_card(data_args["task"])
    rows = []
    for i, backbone in enumerate(backbones):
        dm, bundle, secs = fit_on(
            LandCoverTask,
            LabeledChipDataModule,
            model_args,
            data_args,
            backbone,
            args,
            tmp / f"nc_{i}.safetensors",
        )
        if i == 0:
            reader = dm.train_set.readers[0]
            image, valid = full(reader)
            whole = Window(0, 0, reader.width, reader.height)
            poly = dm.train_set.labels[0].read(whole)
            pts = dm.val_set.labels[0].read(whole)
            train, val = (poly != IGNORE_INDEX) & valid, (pts != IGNORE_INDEX) & valid
            x = pixels(image)
            layer = softmax_regression(
                x[train.ravel()], poly[train].astype(np.int64), task.num_outputs
            )
            m = class_metrics(task, classify(layer, x[val.ravel()]), pts[val])
            rows.append(
                {
                    "task": "land_cover_nc (polygons -> points)",
                    "method": "per-pixel softmax regression (raw bands)",
                    **m,
                    "secs": 0.0,
                }
            )
        m = evaluate_bundle(
            bundle,
            data_args["image"],
            data_args["val_labels"],
            label_field="id",
            chip_size=128,
            progress=False,
        )
        rows.append(
            {
                "task": "land_cover_nc (polygons -> points)",
                "method": method_name(backbone, model_args),
                **m,
                "secs": secs,
            }
        )
    return rows


def chm_task(shared: Path, backbones: list[str], args, tmp: Path) -> list[dict]:
    name = "canopy_height_swiss"
    model_args, data_args = task_args(name, shared, args)
    task = load_task_card("canopy_height")
    rows = []
    for i, backbone in enumerate(backbones):
        dm, bundle, secs = fit_on(
            CanopyHeightTask,
            LabeledChipDataModule,
            model_args,
            data_args,
            backbone,
            args,
            tmp / f"chm_{i}.safetensors",
        )
        reader = dm.train_set.readers[0]
        split = dm.splits[0]
        target = dm.train_set.labels[0].read(Window(0, 0, reader.width, reader.height))
        image, valid = full(reader)
        if i == 0:
            ok = np.isfinite(target) & valid
            train, val = ok & split.mask("train"), ok & split.mask("val")
            x = pixels(image)
            xa = np.hstack([x, np.ones((len(x), 1), np.float32)]).astype(np.float64)
            a, b = xa[train.ravel()], target[train].astype(np.float64)
            coef = np.linalg.solve(a.T @ a + 1e-3 * np.eye(a.shape[1]), a.T @ b)
            pred = np.clip(xa[val.ravel()] @ coef, *task.valid_range)
            metrics = TaskMetrics(task)
            metrics.update(
                torch.from_numpy(pred).float()[None, None, None],
                torch.from_numpy(target[val])[None, None],
            )
            rows.append(
                {
                    "task": "canopy_height_swiss",
                    "method": "per-pixel ridge regression (raw bands)",
                    **metrics.compute(),
                    "secs": 0.0,
                }
            )
        heights = np.where(split.mask("val"), target, np.nan).astype(np.float32)
        lab = write_like(tmp / "chm_val.tif", Path(data_args["image"]), heights, float("nan"))
        m = evaluate_bundle(bundle, data_args["image"], lab, chip_size=128, progress=False)
        rows.append(
            {
                "task": "canopy_height_swiss",
                "method": method_name(backbone, model_args),
                **m,
                "secs": secs,
            }
        )
    return rows


def change_features(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.concatenate([pixels(a), pixels(b), np.abs(pixels(a) - pixels(b))], axis=1)


def change_task(shared: Path, backbones: list[str], args, tmp: Path) -> tuple[list[dict], dict]:
    model_args, data_args = task_args("change_synthetic", shared, args, val_chips=64)
    task = load_task_card("change")
    rows, bundles = [], {}
    for i, backbone in enumerate(backbones):
        dm, bundle, secs = fit_on(
            ChangeTask,
            SyntheticChangeDataModule,
            model_args,
            data_args,
            backbone,
            args,
            tmp / f"change_{i}.safetensors",
        )
        bundles[backbone] = bundle
        val = [dm.val_set[j] for j in range(len(dm.val_set))]
        if i == 0:
            torch.manual_seed(0)  # the same training pairs for the baseline in every run
            train = [dm.train_set[j] for j in range(64)]
            x = np.concatenate(
                [change_features(s["image1"].numpy(), s["image2"].numpy()) for s in train]
            )
            y = np.concatenate([s["mask"].numpy().ravel() for s in train])
            layer = softmax_regression(x, y, 2)
            bundles["baseline"] = layer
            xv = np.concatenate(
                [change_features(s["image1"].numpy(), s["image2"].numpy()) for s in val]
            )
            yv = np.concatenate([s["mask"].numpy().ravel() for s in val])
            rows.append(
                {
                    "task": "change (synthetic, held-out scene)",
                    "method": "per-pixel softmax regression on [d1, d2, |d1-d2|]",
                    **class_metrics(task, classify(layer, xv), yv),
                    "secs": 0.0,
                }
            )
        metrics = TaskMetrics(task)
        for j in range(0, len(val), 8):
            batch = val[j : j + 8]
            prob = bundle.predict_batch(
                torch.stack([s["image1"] for s in batch]), torch.stack([s["image2"] for s in batch])
            )
            metrics.update(prob, torch.stack([s["mask"] for s in batch]))
        rows.append(
            {
                "task": "change (synthetic, held-out scene)",
                "method": method_name(backbone, model_args),
                **metrics.compute(),
                "secs": secs,
            }
        )
    return rows, bundles


def rufiji_task(shared: Path, backbones: list[str], args, tmp: Path, change: dict) -> list[dict]:
    """Land cover of two clear dates vs predicted change between them."""
    folder = shared / RUFIJI
    date_a = folder / f"SEN2_{DATE_A}_T37MEM_20m_10band.tif"
    date_b = folder / f"SEN2_{DATE_B}_T37MEM_20m_10band.tif"
    data_args = {
        "image": str(date_a),
        "labels": str(folder / "base_1997_class_on_ts_grid.tif"),
        "task": "land_cover_rufiji1997",
        "sensor": "sentinel2_l2a",
        "bands": S2_BANDS,
        "scale": 1e-3,
        "offset": 0.0,
        "chip_size": 32,
        "block_size": 64,
        "val_fraction": 0.25,
        "batch_size": args.batch_size,
        "chips_per_epoch": args.batch_size * args.steps,
    }
    model_args, _, _ = config("land_cover_aberystwyth", shared)
    model_args.update(features=args.features)
    rows = []
    for i, backbone in enumerate([*backbones, "baseline"]):
        if backbone == "baseline":
            dm = LabeledChipDataModule(
                **{**data_args, "backbone": for_task(backbones[0], data_args, tmp)}
            )
            dm.setup("fit")
        else:
            chosen = for_task(backbone, data_args, tmp)
            dm = LabeledChipDataModule(**{**data_args, "backbone": chosen})
            dm.setup("fit")
            bundle, _ = fit(
                LandCoverTask,
                {**model_args, **linked({**data_args, "backbone": chosen})},
                dm,
                args.steps,
                tmp / f"rufiji_{i}.safetensors",
            )
        card = dm.train_set.readers[0].card
        ra = ImageReader(
            date_a, card, sensor="sentinel2_l2a", bands=S2_BANDS, scale=1e-3, offset=0.0
        )
        rb = ImageReader(
            date_b, card, sensor="sentinel2_l2a", bands=S2_BANDS, scale=1e-3, offset=0.0
        )
        (ia, va), (ib, vb) = full(ra), full(rb)
        labels = dm.train_set.labels[0].read(Window(0, 0, ra.width, ra.height))
        split = dm.splits[0]
        ok = va & vb
        if backbone == "baseline":
            train = (labels != IGNORE_INDEX) & va & split.mask("train")
            layer = softmax_regression(pixels(ia)[train.ravel()], labels[train].astype(np.int64), 3)
            lc_a = classify(layer, pixels(ia)).argmax(1).numpy().reshape(ok.shape)
            lc_b = classify(layer, pixels(ib)).argmax(1).numpy().reshape(ok.shape)
            chg = (
                classify(change["baseline"], change_features(ia, ib))
                .argmax(1)
                .numpy()
                .reshape(ok.shape)
            )
            method = "per-pixel softmax regressions (land cover + change)"
        else:
            lc_a = predict_full(bundle, ia).argmax(0)
            lc_b = predict_full(bundle, ib).argmax(0)
            chg = predict_full(change[backbone], ia, ib).argmax(0)
            method = method_name(backbone, model_args)
        held = (labels != IGNORE_INDEX) & va & split.mask("val")
        lc_acc = float((lc_a[held] == labels[held]).mean())
        flip = (lc_a != lc_b)[ok]
        ch = (chg == 1)[ok]
        p_change, p_flip = ch.mean(), flip.mean()
        both = (ch & flip).mean()
        expected = p_change * p_flip + (1 - p_change) * (1 - p_flip)
        observed = (ch == flip).mean()
        kappa = (observed - expected) / (1 - expected) if expected < 1 else float("nan")
        rows.append(
            {
                "task": f"Rufiji {DATE_A} vs {DATE_B}",
                "method": method,
                "lc_acc_1997_heldout": lc_acc,
                "changed": float(p_change),
                "lc_flipped": float(p_flip),
                "P(change|flip)": float(both / p_flip) if p_flip else float("nan"),
                "P(flip|change)": float(both / p_change) if p_change else float("nan"),
                "kappa": float(kappa),
            }
        )
    return rows


# ----------------------------------------------------------------- table
def table(rows: list[dict]) -> str:
    seg = ["accuracy", "miou"]
    out = ["| task | method | metrics | train s |", "|---|---|---|---|"]
    for r in rows:
        if "mae" in r:
            keys = ["mae", "rmse", "r2", "bias"]
        elif "kappa" in r:
            keys = [
                "lc_acc_1997_heldout",
                "changed",
                "lc_flipped",
                "P(change|flip)",
                "P(flip|change)",
                "kappa",
            ]
        elif "change_f1" in r:
            keys = ["change_f1", "change_iou", "accuracy"]
        else:
            keys = [k for k in seg if k in r] or ["accuracy", "miou"]
        text = ", ".join(f"{k} {r[k]:.3f}" for k in keys if k in r)
        if "pixels" in r:
            text += f" ({r['pixels']:.0f} px)"
        secs = f"{r['secs']:.0f}" if r.get("secs") else "-"
        out.append(f"| {r['task']} | {r['method']} | {text} | {secs} |")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--backbone", default=os.environ.get("DINOGEO_BACKBONE"), help="pretrained backbone file"
    )
    p.add_argument(
        "--arch", default="vit_tiny_patch16_dinov3_qkvb", help="random-init architecture"
    )
    p.add_argument("--steps", type=int, default=100, help="training steps per head")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--features", type=int, default=32, help="DPT width")
    p.add_argument("--tasks", default="aber,nc,chm,change,rufiji")
    p.add_argument("--shared", default=str(shared_data_dir()))
    args = p.parse_args()
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    shared = Path(args.shared)
    tasks = set(args.tasks.split(","))
    rows: list[dict] = []
    start = time.time()
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        # a pretrained backbone is compared with the same architecture randomly initialised;
        # without one, the random-init --arch only
        backbones = [args.backbone, random_twin(args.backbone, tmp)] if args.backbone else []
        backbones = backbones or [args.arch]
        if "aber" in tasks:
            rows += segmentation_block_task("land_cover_aberystwyth", shared, backbones, args, tmp)
        if "nc" in tasks:
            rows += nc_task(shared, backbones, args, tmp)
        if "chm" in tasks:
            rows += chm_task(shared, backbones, args, tmp)
        change: dict = {}
        if "change" in tasks or "rufiji" in tasks:
            change_rows, change = change_task(shared, backbones, args, tmp)
            rows += change_rows if "change" in tasks else []
        if "rufiji" in tasks:
            rows += rufiji_task(shared, backbones, args, tmp, change)
    print(
        f"\n{len(backbones)} backbone(s): {backbones}; {args.steps} steps x batch {args.batch_size} "
        f"per head; total {time.time() - start:.0f} s on CPU\n"
    )
    print(table(rows))


if __name__ == "__main__":
    main()
