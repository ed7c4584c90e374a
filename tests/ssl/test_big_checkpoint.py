"""Continued pretraining in bounded host memory: the same weights as the old loading path.

The old path (written out below as the reference) built a randomly initialised student, read the
whole ``.pth``, converted it into another empty backbone, expanded its bands into a deep copy,
copied it into the student and deep-copied the student for the EMA and Gram teachers. The new
path builds on the meta device, memory-maps the file, assigns its tensors and lets the teachers
share the student's storage until they diverge. Both must give identical weights and identical
features on real Sentinel-2 imagery.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from rasterio.windows import Window
from timm.models.eva import checkpoint_filter_fn

from dinogeo.data.opener import open_source
from dinogeo.models import save_backbone
from dinogeo.models.backbone import create_backbone, empty_backbone
from dinogeo.models.bands import RGB_BANDS, expand_bands
from dinogeo.models.card import WeightCard
from dinogeo.models.materialise import shared_copy, shares_storage, unshare
from dinogeo.models.official import load_official_dinov3, official_state_dict
from dinogeo.ssl.module import SSLTask
from dinogeo.ssl.task_config import DINOHeadConfig, GramConfig, InitConfig

ABER = "sentinel2-landcover-aberystwyth-rsgislib/sen2_20210527_aber_10band_crop.tif"
BANDS = ["B04", "B03", "B02", "B08", "B11", "B12"]
HEAD = DINOHeadConfig(out_dim=64, hidden_dim=32, bottleneck_dim=16)
ARCH = "vit_small_patch16_dinov3_qkvb"
KWARGS = {"img_size": 224, "drop_path_rate": 0.0, "rope_rescale_coords": 2.0}


@pytest.fixture(scope="module")
def meta_pth(tmp_path_factory, ckpt_data):
    """A ViT-S/16 checkpoint in Meta's layout with the SAT ViT-L ``local_cls_norm``."""
    path = tmp_path_factory.mktemp("ckpt") / "dinov3_vits16_meta_layout.pth"
    ckpt_data.write_meta_checkpoint(path, ARCH, local_cls_norm=True, seed=3)
    return path


def _old_path(path: Path, bands: list[str]):
    """The loading path before this change, step by step (the reference)."""
    student = create_backbone(ARCH, len(bands), **KWARGS)
    state = official_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    official = empty_backbone(ARCH, 3, **KWARGS)
    official.add_local_cls_norm()
    converted = checkpoint_filter_fn(dict(state), official.vit)
    official.vit.load_state_dict(converted, strict=True)
    with torch.no_grad():
        official.mask_token.copy_(state["mask_token"].reshape(1, -1))
    official.local_cls_norm.load_state_dict(
        {k[len("local_cls_norm.") :]: v for k, v in state.items() if "local_cls_norm" in k}
    )
    official = expand_bands(official, bands, source_bands=RGB_BANDS)
    student.add_local_cls_norm()
    student.load_state_dict(official.state_dict(), strict=True)
    return student, copy.deepcopy(student), copy.deepcopy(student)


def _chip(shared_data) -> torch.Tensor:
    """A normalised 224 x 224 chip of a real Aberystwyth Sentinel-2 scene (6 bands)."""
    src = open_source(shared_data / ABER, sensor="sentinel2_sr_x1000", bands=BANDS)
    image, valid = src.read_normalized(Window(144, 144, 224, 224))
    assert valid.all()
    return torch.from_numpy(np.ascontiguousarray(image))[None]


def _new_task(path: Path) -> SSLTask:
    return SSLTask(
        arch=ARCH,
        in_chans=len(BANDS),
        band_names=BANDS,
        dino_head=HEAD,
        ibot_head=HEAD,
        init=InitConfig(official_checkpoint=str(path)),
        gram=GramConfig(enabled=True, from_initial=True, first_update=-1, max_updates=0),
        **KWARGS,
    )


def test_new_loading_equals_the_old_path_on_real_imagery(meta_pth, shared_data):
    old_student, old_teacher, old_gram = _old_path(meta_pth, BANDS)
    task = _new_task(meta_pth)
    new = {
        "student": task.student_backbone,
        "teacher": task.teacher_backbone,
        "gram": task.gram_teacher.backbone,
    }
    old = {"student": old_student, "teacher": old_teacher, "gram": old_gram}
    for name in new:
        a, b = old[name].state_dict(), new[name].state_dict()
        assert list(a) == list(b), name
        for key in a:
            assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), (name, key)
        assert new[name].config == old[name].config
    assert task.gram_teacher.ready
    chip = _chip(shared_data)
    with torch.no_grad():
        for name in new:
            want = old[name].eval().forward_features(chip)
            got = new[name].eval().forward_features(chip)
            for key in want:
                assert torch.equal(want[key], got[key]), (name, key)
    # and the public loader gives the same backbone
    loaded = load_official_dinov3(meta_pth, ARCH, band_names=BANDS, **KWARGS)
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in old_student.state_dict().items())


def test_teachers_share_the_students_storage_until_they_diverge(meta_pth):
    task = _new_task(meta_pth)
    student = task.student
    assert shares_storage(task.teacher, student)  # no copy at construction
    assert shares_storage(task.gram_teacher, student)
    assert all(not p.requires_grad for p in task.teacher.parameters())
    assert all(p.requires_grad for p in student.parameters())
    weight = task.student_backbone.vit.blocks[0].attn.qkv.weight
    assert not weight.is_meta and weight.dtype == torch.float32
    before = {k: v.clone() for k, v in task.teacher.state_dict().items()}
    task._unshare()  # what on_fit_start does on the CPU (an accelerator move separates them)
    assert not shares_storage(task.teacher, student)
    assert not shares_storage(task.gram_teacher, student)
    assert not shares_storage(task.gram_teacher, task.teacher)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    for key, value in task.teacher.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert torch.equal(
        task.gram_teacher.backbone.vit.patch_embed.proj.weight,
        before["backbone.vit.patch_embed.proj.weight"],
    )


def test_loading_a_checkpoint_into_a_shared_task_keeps_each_model(meta_pth):
    task = _new_task(meta_pth)
    state = {k: v.clone() for k, v in task.state_dict().items()}
    for key in state:
        if key.startswith("teacher.") and state[key].is_floating_point():
            state[key] += 0.5  # a resumed run: the EMA teacher differs from the student
    task.load_state_dict(state)
    for key, value in task.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_moving_to_another_dtype_separates_the_copies():
    base = torch.nn.Linear(4, 4)
    twin = shared_copy(base)
    assert shares_storage(twin, base)
    twin.double()
    assert not shares_storage(twin, base)
    other = shared_copy(base)
    assert unshare(other, base) == sum(p.numel() * 4 for p in base.parameters())
    assert unshare(other, base) == 0


def test_start_from_a_dinogeo_backbone_file(tmp_path):
    saved = create_backbone("vit_test_patch16_dinov3", 4, img_size=32)
    card = WeightCard(
        arch="vit_test_patch16_dinov3",
        patch_size=16,
        embed_dim=saved.embed_dim,
        band_names=["B04", "B03", "B02", "B08"],
        sensor="sentinel2_l1c",
        mean=[0.1] * 4,
        std=[0.1] * 4,
    )
    path = tmp_path / "start.safetensors"
    save_backbone(path, saved, card)
    task = SSLTask(
        arch="vit_test_patch16_dinov3",
        in_chans=4,
        img_size=32,
        dino_head=HEAD,
        ibot_head=HEAD,
        init=InitConfig(backbone=str(path)),
    )
    for key, value in saved.state_dict().items():
        assert torch.equal(task.student_backbone.state_dict()[key], value), key
        assert torch.equal(task.teacher_backbone.state_dict()[key], value), key


def test_a_ckpt_start_point_survives_its_file_being_rewritten(tmp_path):
    """Training rewrites .ckpt files in place: a start point read from one must not stay mapped."""
    source = create_backbone("vit_test_patch16_dinov3", 4, img_size=32)
    ckpt = tmp_path / "last.ckpt"
    state = {f"teacher.backbone.{k}": v.clone() for k, v in source.state_dict().items()}
    torch.save({"state_dict": state, "optimizer_states": []}, ckpt)
    task = SSLTask(
        arch="vit_test_patch16_dinov3",
        in_chans=4,
        img_size=32,
        dino_head=HEAD,
        ibot_head=HEAD,
        init=InitConfig(backbone=str(ckpt)),
    )
    with ckpt.open("wb") as handle:  # truncated in place, as a checkpoint save does
        handle.write(b"")
    for key, value in source.state_dict().items():  # a mapped page would raise SIGBUS here
        assert torch.equal(task.student_backbone.state_dict()[key], value), key
