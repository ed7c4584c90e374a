"""SSLTask: the full DINOv3 step in DDP, continued pretraining from Meta weights, Gram teacher
refresh, health metrics, curve plots and the distributed/FSDP configs."""

from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from lightning.pytorch.strategies import DDPStrategy

from dinogeo.cli.main import main
from dinogeo.models import create_backbone, load_backbone, load_official_dinov3
from dinogeo.ssl.datamodule import SSLDataModule
from dinogeo.ssl.fsdp import SSLFSDPStrategy
from dinogeo.ssl.gram_teacher import GramTeacher
from dinogeo.ssl.module import SSLTask
from dinogeo.ssl.module_step import ssl_losses
from dinogeo.ssl.monitor import embedding_health, knn_accuracy, plot_training_curves
from dinogeo.ssl.task_config import DINOHeadConfig, LossConfig
from tests.ssl.test_pretrain_cli import parse_default

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs" / "ssl"
S2_10M = "sentinel2-l1c-virginia-sattestdata/S2_18SVG_20160112_10m_B02-B03-B04-B08_crop.tif"
ABER = "sentinel2-landcover-aberystwyth-rsgislib/sen2_20210527_aber_10band_crop.tif"
ABER_CLS = "sentinel2-landcover-aberystwyth-rsgislib/sen2_20210527_aber_cls_crop.tif"
ABER_BANDS = ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"]
HEAD = DINOHeadConfig(out_dim=32, hidden_dim=32, bottleneck_dim=16)


def _load_generator():
    spec = importlib.util.spec_from_file_location(
        "ckpt_data", ROOT / "tests" / "data" / "checkpoints" / "data.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _task(**kwargs):
    return SSLTask(
        arch="vit_test_patch16_dinov3",
        in_chans=4,
        img_size=32,
        dino_head=HEAD,
        ibot_head=HEAD,
        backbone_kwargs={"init_values": 0.1},
        **kwargs,
    )


def _real_batch(shared, n_images=4, seed=0):
    """A collated multi-crop batch of real Sentinel-2 chips."""
    dm = SSLDataModule(
        sources=[str(shared / S2_10M)],
        sensor="sentinel2_l1c",
        bands=["B02", "B03", "B04", "B08"],
        samples_per_epoch=n_images,
        batch_size=n_images,
        num_workers=0,
        global_size=32,
        local_size=16,
        n_local=2,
        chip_size=48,
        seed=seed,
    )
    dm.setup("fit")
    return dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)


def _split(batch, rank, world):
    """Rank ``rank``'s images of a crop-major collated batch, masks re-indexed locally."""
    two_b = batch["global_crops"].shape[0]
    b = two_b // 2 // world
    n_local = batch["local_crops"].shape[0] // (two_b // 2)

    def take(x, n_crops):
        return x.view(n_crops, -1, *x.shape[1:])[:, rank * b : (rank + 1) * b].reshape(
            -1, *x.shape[1:]
        )

    masks = take(batch["masks"], 2)
    per_image = masks.sum(-1, keepdim=True).clamp(min=1).float()
    return {
        "global_crops": take(batch["global_crops"], 2),
        "local_crops": take(batch["local_crops"], n_local),
        "masks": masks,
        "mask_indices": masks.flatten().nonzero().flatten(),
        "masks_weight": (1.0 / per_image).expand_as(masks)[masks],
        "n_masked_images": 2 * b,
    }


def _ddp_worker(rank, world, port, batch, state, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        # one KoLeo group of all the images (counted in samples, as the recipe)
        task = _task(loss=LossConfig(koleo_group_size=batch["global_crops"].shape[0] // 2))
        task.load_state_dict(state)
        res = ssl_losses(
            task.student,
            task.teacher,
            _split(batch, rank, world),
            dino_loss=task.dino_loss,
            ibot_loss=task.ibot_loss,
            loss_cfg=task.loss_cfg,
            teacher_temp=0.05,
            with_health=False,
        )
        res.loss.backward()
        loss = res.loss.detach().clone()
        dist.all_reduce(loss)
        grad = task.student["dino_head"].last_layer.weight.grad.clone()
        dist.all_reduce(grad)
        if rank == 0:
            out.put((float(loss) / world, (grad / world).numpy()))
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
def test_ddp_loss_equals_single_process(shared_data):
    """Two gloo ranks with half the images each give the single-process loss and gradients."""
    torch.manual_seed(0)
    batch = _real_batch(shared_data)
    task = _task(loss=LossConfig(koleo_group_size=0))
    single = ssl_losses(
        task.student,
        task.teacher,
        batch,
        dino_loss=task.dino_loss,
        ibot_loss=task.ibot_loss,
        loss_cfg=task.loss_cfg,
        teacher_temp=0.05,
        with_health=False,
    )
    single.loss.backward()
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    port = 29500 + os.getpid() % 1000
    mp.start_processes(
        _ddp_worker,
        args=(2, port, batch, task.state_dict(), out),
        nprocs=2,
        join=True,
        start_method="spawn",
    )
    loss, grad = out.get(timeout=10)
    # float32 all-reduces sum in another order than the single-process reductions
    assert loss == pytest.approx(float(single.loss), rel=1e-4)
    expected = task.student["dino_head"].last_layer.weight.grad
    # relative error of the whole gradient (elementwise checks trip on near-zero entries)
    error = (torch.from_numpy(grad) - expected).norm() / expected.norm()
    assert error < 1e-3, float(error)


def test_continue_from_official_checkpoint(shared_data, tmp_path, monkeypatch):
    """continue_official.yaml: Meta weights expanded to 4 bands, head warm-up, Gram anchor."""
    monkeypatch.chdir(tmp_path)
    pth = tmp_path / "meta.pth"
    _load_generator().write_meta_checkpoint(pth, "vit_test_patch16_dinov3")
    bands = ["B04", "B03", "B02", "B08"]
    args = [
        "pretrain",
        "--config",
        str(CONFIGS / "continue_official.yaml"),
        "--model.arch",
        "vit_test_patch16_dinov3",
        "--model.img_size",
        "32",
        "--model.init.official_checkpoint",
        str(pth),
        "--model.init.head_warmup_steps",
        "2",
        "--model.dino_head.out_dim",
        "32",
        "--model.dino_head.hidden_dim",
        "32",
        "--model.dino_head.bottleneck_dim",
        "16",
        "--model.ibot_head.out_dim",
        "32",
        "--model.ibot_head.hidden_dim",
        "32",
        "--model.ibot_head.bottleneck_dim",
        "16",
        "--model.optim.warmup_steps",
        "0",
        "--model.optim.freeze_last_layer_steps",
        "0",
        "--model.optim.lr",
        "1e-2",
        "--model.gram.weight_start_step",
        "0",
        "--model.gram.weight_warmup_steps",
        "0",
        "--trainer.accelerator",
        "cpu",
        "--trainer.max_steps",
        "3",
        "--trainer.log_every_n_steps",
        "1",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.callbacks",
        '[{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", '
        '"init_args": {"dirpath": "ck", "save_top_k": -1, "every_n_train_steps": 1}}]',
        "--data.index",
        "null",
        "--data.sources",
        f"[{shared_data / S2_10M}]",
        "--data.sensor",
        "sentinel2_l1c",
        "--data.bands",
        f"[{', '.join(bands)}]",
        "--data.batch_size",
        "4",
        "--data.num_workers",
        "0",
        "--data.samples_per_epoch",
        "16",
        "--data.global_size",
        "32",
        "--data.local_size",
        "16",
        "--data.n_local",
        "2",
        "--data.gram_size",
        "64",
        "--data.chip_size",
        "64",
    ]
    assert main(args) == 0
    official = load_official_dinov3(pth, "vit_test_patch16_dinov3", band_names=bands).state_dict()
    prefix = "student.backbone."

    def backbone_of(path, which=prefix):
        state = torch.load(path, weights_only=True)["state_dict"]
        return {k[len(which) :]: v for k, v in state.items() if k.startswith(which)}, state

    warm, state2 = backbone_of(tmp_path / "ck" / "epoch=0-step=2.ckpt")
    for key, value in official.items():  # frozen during the 2 warm-up steps
        torch.testing.assert_close(warm[key], value, msg=key)
    assert not torch.equal(  # while the heads trained
        state2["student.dino_head.mlp.0.weight"],
        torch.load(tmp_path / "ck" / "epoch=0-step=1.ckpt", weights_only=True)["state_dict"][
            "student.dino_head.mlp.0.weight"
        ],
    )
    after, state3 = backbone_of(tmp_path / "ck" / "epoch=0-step=3.ckpt")
    assert any(not torch.equal(after[k], official[k]) for k in official)  # unfrozen at step 3
    gram, _ = backbone_of(tmp_path / "ck" / "epoch=0-step=3.ckpt", "gram_teacher.backbone.")
    for key, value in official.items():  # the initial weights anchor the Gram loss
        torch.testing.assert_close(gram[key], value, msg=key)
    assert bool(state3["gram_teacher.initialised"])
    backbone, card = load_backbone(tmp_path / "runs" / "continue_official" / "backbone.safetensors")
    assert card.band_names == bands and str(pth) in card.source
    assert backbone.in_chans == 4


def test_gram_teacher_refresh_schedule():
    teacher = GramTeacher(
        create_backbone("vit_test_patch16_dinov3", 3),
        first_update=5,
        update_frequency=3,
        max_updates=2,
    )
    ema = create_backbone("vit_test_patch16_dinov3", 3)
    updates = [step for step in range(20) if teacher.maybe_update(step, ema)]
    assert updates == [4, 7]  # after steps 5 and 8 (counted from 1), then max_updates reached
    assert teacher.ready
    for a, b in zip(teacher.backbone.parameters(), ema.parameters()):
        assert torch.equal(a, b) and not a.requires_grad
    never = GramTeacher(ema, first_update=-1)
    assert not any(never.should_update(s) for s in range(50)) and not never.ready


def test_health_metrics_and_knn():
    collapsed = torch.ones(16, 8) + 1e-6 * torch.randn(16, 8)
    spread = torch.randn(16, 8)
    bad, good = embedding_health(collapsed), embedding_health(spread)
    assert bad["embedding_std"] < 0.01 and bad["mean_cosine"] > 0.999
    assert good["embedding_std"] > 0.5 and abs(good["mean_cosine"]) < 0.3
    centres = torch.eye(3) * 5
    labels = torch.arange(3).repeat_interleave(10)
    feats = centres[labels] + 0.1 * torch.randn(30, 3)
    assert knn_accuracy(feats[::2], labels[::2], feats[1::2], labels[1::2], k=3) == 1.0
    assert knn_accuracy(feats[::2], labels[::2], feats[1::2], (labels[1::2] + 1) % 3, k=3) == 0.0


def test_plot_training_curves(tmp_path):
    csv_path = tmp_path / "metrics.csv"
    rows = ["epoch,step,loss/dino,health/embedding_std"]
    rows += [f"0,{i},{6 - 0.1 * i},{0.1 * i}" for i in range(10)]
    csv_path.write_text("\n".join(rows) + "\n")
    out = plot_training_curves(csv_path, tmp_path / "curves.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(FileNotFoundError):
        plot_training_curves(tmp_path / "missing.csv", tmp_path / "x.png")


def test_demo_curves_mark_the_uniform_target_losses(tmp_path):
    """The demo's curves carry ln K (DINO) and mask_probability * ln K' (iBOT) reference lines."""
    from dinogeo.config import load_config
    from dinogeo.demo import uniform_target_losses

    cfg = load_config("demo/pretrain", {"data.mask_probability": 0.4})
    refs = uniform_target_losses(cfg)
    k, k_ibot = cfg["model"]["dino_head"]["out_dim"], cfg["model"]["ibot_head"]["out_dim"]
    assert refs["loss/dino"][0] == pytest.approx(math.log(k))
    assert refs["loss/ibot"][0] == pytest.approx(0.4 * math.log(k_ibot))
    csv_path = tmp_path / "metrics.csv"
    rows = ["epoch,step,loss/dino,loss/ibot"] + [f"0,{i},{7 - 0.05 * i},{3}" for i in range(10)]
    csv_path.write_text("\n".join(rows) + "\n")
    plain = plot_training_curves(csv_path, tmp_path / "plain.png").read_bytes()
    marked = plot_training_curves(csv_path, tmp_path / "marked.png", references=refs).read_bytes()
    assert marked[:8] == b"\x89PNG\r\n\x1a\n" and marked != plain


@pytest.mark.parametrize(
    "name, strategy, ranks", [("ddp.yaml", DDPStrategy, 4), ("fsdp.yaml", SSLFSDPStrategy, 2)]
)
def test_distributed_configs_parse(shared_data, tmp_path, monkeypatch, name, strategy, ranks):
    """ddp.yaml / fsdp.yaml layered on the default config build their strategies (2 CPU ranks)."""
    monkeypatch.chdir(tmp_path)
    cli = parse_default(
        "--config",
        str(CONFIGS / name),
        "--trainer.accelerator",
        "cpu",
        "--trainer.devices",
        "2",
        "--data.sources",
        f"[{shared_data / S2_10M}]",
        "--data.sensor",
        "sentinel2_l1c",
        "--data.bands",
        "[B02, B03, B04, B08]",
    )
    assert isinstance(cli.trainer.strategy, strategy)
    assert cli.trainer.world_size == 2
    # ranks x the per-rank batch, in samples as the recipe's koleo_distributed_loss_group_size
    assert cli.model.loss_cfg.koleo_group_size == ranks * cli.datamodule.batch_size
    if strategy is SSLFSDPStrategy:
        assert cli.trainer.strategy.reshard_after_forward is True
        assert cli.trainer.strategy._save_distributed_checkpoint is False  # one full .ckpt


def test_knn_probe_set_from_labelled_raster(shared_data):
    """The kNN monitor's probe set: majority-labelled chips with a left/right spatial split."""
    dm = SSLDataModule(
        sources=[str(shared_data / ABER)],
        sensor="sentinel2_l2a",
        bands=ABER_BANDS,
        scale=1e-3,
        offset=0.0,
        probe_image=str(shared_data / ABER),
        probe_labels=str(shared_data / ABER_CLS),
        probe_chip_size=32,
        global_size=32,
    )
    images, labels, is_ref = dm.probe_data()
    assert images.shape[1:] == (10, 32, 32) and images.shape[0] == labels.shape[0]
    assert set(labels.tolist()) <= {1, 2, 3, 4} and len(set(labels.tolist())) >= 3
    assert 0 < int(is_ref.sum()) < len(is_ref)
    # chip-mean spectra already separate the classes well above chance (0.25)
    feats = images.mean(dim=(2, 3))
    assert knn_accuracy(feats[is_ref], labels[is_ref], feats[~is_ref], labels[~is_ref]) > 0.5
