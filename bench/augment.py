"""Multi-crop input pipeline: batched (``data.augment_on: device``) against per-sample (``workers``).

CPU part (always): the same real raw chips of the Sentinel-2 scene in ``../shared/data`` (uint16,
4 bands, read once into memory, so file reads are not timed) go through

(a) the per-sample path of the DataLoader workers: ``Sensor.normalize`` + ``zero_invalid``,
    :class:`~dinogeo.ssl.augment.MultiCropAugmentation` on each chip, then
    :func:`~dinogeo.ssl.collate.collate_multicrop` (stacking + iBOT masks);
(b) the batched path: :class:`~dinogeo.ssl.device_augment.DeviceMultiCrop` on the raw batch
    (normalisation, crops, D4, jitter, blur, solarisation, iBOT masks), on the CPU.

Both run on one thread, interleaved round by round, and the median round gives images/s; the
ratio (b)/(a) is printed per crop setting, with wall-clock and process-CPU-time figures (the
CPU-time ratio is the one to trust on a shared, loaded machine). Crop settings:
``default`` (configs/ssl/default.yaml: global 64, 4 local 32, 96-px chips) and ``recipe``
(configs/ssl/pretrain.yaml: global 224, 8 local 96, 224-px chips).

CUDA part (when ``torch.cuda.is_available()``, or with ``--pretrain-device cpu`` as a smoke
run): (b) on the GPU, then ``dinogeo pretrain`` (configs/ssl/pretrain.yaml: ViT-S/16, batch 64,
``--data.num_workers`` loader workers, device-side augmentation) timed per step after a
warm-up, once reading real chips from the file and once on in-memory data (the same raw
batches held in pinned host memory, through the same device augmentation and step); prints
``throughput ratio = real / in-memory`` (target >= 0.9).

Usage: python bench/augment.py [--rounds 5] [--batch 32] [--threads 1]
       [--pretrain-steps 30] [--pretrain-device cuda|cpu|none] [--workers 8]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from dinogeo.data.windowed import zero_invalid
from dinogeo.ssl.augment import MultiCropAugmentation
from dinogeo.ssl.collate import collate_multicrop
from dinogeo.ssl.datamodule import SSLDataModule
from dinogeo.ssl.device_augment import DeviceMultiCrop

ROOT = Path(__file__).resolve().parents[1]
SCENE = "sentinel2-l1c-virginia-sattestdata/S2_18SVG_20160112_10m_B02-B03-B04-B08_crop.tif"
DATA = dict(sensor="sentinel2_l1c", bands=["B02", "B03", "B04", "B08"])
SETTINGS = {
    "default": dict(global_size=64, local_size=32, n_local=4, chip_size=96),
    "recipe": dict(global_size=224, local_size=96, n_local=8, chip_size=224),
}


def raw_batches(setting: dict[str, int], batch: int, n_batches: int) -> tuple[SSLDataModule, list]:
    """Real raw-chip batches of the scene (what the device path's workers deliver)."""
    dm = SSLDataModule(
        sources=[str(ROOT.parent / "shared" / "data" / SCENE)],
        samples_per_epoch=batch * n_batches,
        batch_size=batch,
        num_workers=0,
        augment_on="device",
        **DATA,
        **setting,
    )
    dm.setup("fit")
    return dm, list(dm.train_dataloader())


def per_sample(dm: SSLDataModule, batch: dict[str, Any], seed: int) -> dict[str, Any]:
    """The workers' path on one raw batch: normalise, augment each chip, collate with masks."""
    sensor = dm.sensor
    aug: MultiCropAugmentation = dm.augments[0]
    raw = batch["raw"].numpy().view(np.uint16) if batch["raw_uint16"] else batch["raw"].numpy()
    valid = batch["valid"].numpy()
    gen = torch.Generator().manual_seed(seed)
    samples = []
    for i in range(raw.shape[0]):
        image = sensor.normalize(raw[i])
        if not valid[i].all():
            zero_invalid(image, valid[i], raw.dtype)
        samples.append(aug(torch.from_numpy(image), generator=gen))
    return collate_multicrop(samples, dm.hparams["patch_size"], generator=gen)


def timed(fn: Callable[[], Any]) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def cpu_part(args: argparse.Namespace) -> None:
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"CPU, {args.threads} thread(s); uptime: {load}")
    for name, setting in SETTINGS.items():
        dm, batches = raw_batches(setting, args.batch, 2)
        device = DeviceMultiCrop(dm.augments, dm.hparams["patch_size"])
        per_sample(dm, batches[0], 0)  # warm-up
        device(batches[0])
        rows: dict[str, list[tuple[float, float]]] = {"per-sample": [], "batched": []}
        for r in range(args.rounds):
            b = batches[r % len(batches)]
            rows["per-sample"].append(timed(lambda b=b, r=r, dm=dm: per_sample(dm, b, r)))
            rows["batched"].append(timed(lambda b=b, device=device: device(b)))
        n = args.batch
        rate = {
            k: (n / statistics.median(w for w, _ in v), n / statistics.median(c for _, c in v))
            for k, v in rows.items()
        }
        s = setting
        print(
            f"{name}: global {s['global_size']}, {s['n_local']} local {s['local_size']}, "
            f"{s['chip_size']}-px chips, 4 bands, batch {n}, {args.rounds} rounds\n"
            f"  per-sample (workers path) {rate['per-sample'][0]:7.1f} img/s wall "
            f"{rate['per-sample'][1]:7.1f} img/s CPU time\n"
            f"  batched (device path)     {rate['batched'][0]:7.1f} img/s wall "
            f"{rate['batched'][1]:7.1f} img/s CPU time\n"
            f"  ratio = {rate['batched'][1] / rate['per-sample'][1]:.2f} (CPU time), "
            f"{rate['batched'][0] / rate['per-sample'][0]:.2f} (wall)"
        )
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"uptime after: {load}")


def _timer_callback(device: str, warmup: int) -> Any:
    import lightning.pytorch as pl

    class StepTimer(pl.Callback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self._last: float | None = None
            self.step = 0

        def on_train_batch_start(self, *args: Any) -> None:
            if device == "cuda":
                torch.cuda.synchronize()
            now = time.perf_counter()
            if self._last is not None and self.step > warmup:
                self.times.append(now - self._last)
            self._last = now
            self.step += 1

    return StepTimer()


def _pretrain_args(args: argparse.Namespace, root: Path) -> list[str]:
    small = args.pretrain_device == "cpu"  # smoke run of the script itself
    out = ["--config", str(ROOT / "configs" / "ssl" / "pretrain.yaml")]
    out += ["--data.sources", f"[{ROOT.parent / 'shared' / 'data' / SCENE}]"]
    out += ["--data.index", "null", "--data.sensor", DATA["sensor"]]
    out += ["--data.bands", "[B02, B03, B04, B08]", "--data.augment_on", "device"]
    out += ["--data.num_workers", str(args.workers)]
    out += ["--trainer.accelerator", "gpu" if args.pretrain_device == "cuda" else "cpu"]
    out += ["--trainer.devices", "1", "--trainer.max_steps", str(args.pretrain_steps)]
    out += ["--trainer.enable_progress_bar", "false", "--trainer.logger", "false"]
    out += ["--trainer.enable_checkpointing", "false", "--trainer.callbacks", "[]"]
    out += ["--trainer.default_root_dir", str(root), "--model.export_path", "null"]
    if small:
        out += ["--model.arch", "vit_test_patch16_dinov3", "--model.img_size", "64"]
        out += ["--data.global_size", "64", "--data.local_size", "32", "--data.n_local", "2"]
        out += ["--data.batch_size", "8", "--data.chip_size", "96"]
        out += ["--model.dino_head.out_dim", "256", "--model.ibot_head.out_dim", "256"]
    return out


def pretrain_part(args: argparse.Namespace) -> None:
    from dinogeo.config import build_cli
    from dinogeo.ssl.module import SSLTask
    from dinogeo.ssl.pretrain import PretrainCLI

    device = args.pretrain_device
    rates = {}
    for kind in ("in-memory", "real"):
        root = Path(tempfile.mkdtemp(prefix=f"bench_augment_{kind}_"))
        cli = build_cli(
            PretrainCLI,
            _pretrain_args(args, root),
            model_class=SSLTask,
            datamodule_class=SSLDataModule,
            run=False,
            save_config_kwargs={"overwrite": True},
        )
        dm: SSLDataModule = cli.datamodule
        timer = _timer_callback(device, warmup=min(5, args.pretrain_steps // 3))
        cli.trainer.callbacks.append(timer)
        if kind == "in-memory":
            dm.setup("fit")
            cached = list(_take(dm.train_dataloader(), 8))
            steps = args.pretrain_steps

            def loader(cached: list = cached, steps: int = steps) -> DataLoader:
                items = [cached[i % len(cached)] for i in range(steps)]
                return DataLoader(items, batch_size=None, pin_memory=device == "cuda")

            dm.train_dataloader = loader  # type: ignore[method-assign]
        cli.trainer.fit(cli.model, datamodule=dm)
        step = statistics.median(timer.times)
        rates[kind] = dm.batch_size / step
        print(
            f"  dinogeo pretrain on {device}, {kind} data: {rates[kind]:.1f} img/s "
            f"({step * 1000:.1f} ms/step, batch {dm.batch_size}, {len(timer.times)} timed steps)"
        )
    print(f"  throughput ratio = {rates['real'] / rates['in-memory']:.2f} (real / in-memory data)")


def _take(loader: DataLoader, n: int) -> list:
    out = []
    for batch in loader:
        out.append(batch)
        if len(out) == n:
            break
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--pretrain-steps", type=int, default=30)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument(
        "--pretrain-device",
        choices=["cuda", "cpu", "none"],
        default="cuda" if torch.cuda.is_available() else "none",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cpu_part(args)
    if torch.cuda.is_available():
        dm, batches = raw_batches(SETTINGS["recipe"], 64, 3)
        device = DeviceMultiCrop(dm.augments, dm.hparams["patch_size"])
        gpu = [
            {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in b.items()}
            for b in batches
        ]
        device(gpu[0])
        torch.cuda.synchronize()
        start = time.perf_counter()
        for b in gpu:
            device(b)
        torch.cuda.synchronize()
        print(
            f"CUDA batched (device path), recipe crops, batch 64: "
            f"{64 * len(gpu) / (time.perf_counter() - start):.0f} img/s"
        )
    else:
        print("CUDA: not available on this machine, the GPU figures were not run")
    if args.pretrain_device != "none":
        pretrain_part(args)


if __name__ == "__main__":
    main()
