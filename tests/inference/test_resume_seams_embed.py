"""Resume after a kill, cleanup after failures, seam-free stitching, and ``dinogeo embed``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from scipy import ndimage

import dinogeo.inference.predict as predict_mod
from dinogeo.cli.main import main
from dinogeo.data.opener import open_source
from dinogeo.inference import predict_raster
from dinogeo.inference.inputs import open_for_card, window_reader
from dinogeo.inference.writer import partial_dir
from tests.data.inference import data as fx

FAST = ["--tile", "128", "--overlap", "32", "--batch-size", "4", "--quiet", "--no-vectorize"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return fx.write_bundle(tmp_path_factory.mktemp("bundle") / "lc.safetensors")


def _spy_blocks(monkeypatch):
    computed = []
    real = predict_mod.stream_blocks

    def spy(bgrid, blocks, *args, **kwargs):
        computed.extend(b.index for b in blocks)
        return real(bgrid, blocks, *args, **kwargs)

    monkeypatch.setattr(predict_mod, "stream_blocks", spy)
    return computed


def test_resume_after_kill_matches_an_uninterrupted_run(bundle, shared_data, tmp_path, monkeypatch):
    src = shared_data / fx.RGB_BYTE
    out = tmp_path / "killed.tif"
    args = [
        "predict",
        "--model",
        str(bundle),
        str(src),
        "-o",
        str(out),
        "--block",
        "256",
        *FAST,
    ]
    env = os.environ | {"DINOGEO_TEST_BLOCK_DELAY": "0.4"}
    proc = subprocess.Popen([sys.executable, "-m", "dinogeo.cli.main", *args], env=env)
    state = partial_dir(out) / "state.json"
    deadline = time.monotonic() + 240
    done: dict = {}
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if state.is_file():
                done = json.loads(state.read_text())["done"]
                if len(done) >= 3:
                    break
            time.sleep(0.1)
    finally:
        proc.kill()
        proc.wait()
    assert 3 <= len(done) < 12, f"the run must be killed mid-way (done: {sorted(done)})"
    assert not out.exists(), "no partial output at the destination"
    finished = {int(k) for k in json.loads(state.read_text())["done"]}
    computed = _spy_blocks(monkeypatch)
    assert main([*args, "--resume"]) == 0
    assert sorted(computed) == sorted(set(range(12)) - finished), "only unfinished blocks redone"
    assert not partial_dir(out).exists()
    ref = tmp_path / "ref.tif"
    assert (
        main(
            [
                "predict",
                "--model",
                str(bundle),
                str(src),
                "-o",
                str(ref),
                "--block",
                "256",
                *FAST,
            ]
        )
        == 0
    )
    with rasterio.open(out) as a, rasterio.open(ref) as b:
        np.testing.assert_array_equal(a.read(), b.read())
        assert a.profile == b.profile
    # a different run (other overlap) refuses to resume from the wrong state
    partial_dir(tmp_path / "x.tif").mkdir()
    (partial_dir(tmp_path / "x.tif") / "state.json").write_text(
        json.dumps({"params_hash": "other"})
    )
    bad = [
        "predict",
        "--model",
        str(bundle),
        str(src),
        "-o",
        str(tmp_path / "x.tif"),
        "--resume",
        *FAST,
    ]
    assert main(bad) == 1


class _Failing:
    """Wraps a model; ``predict_batch`` raises after ``after`` calls."""

    def __init__(self, model, after):
        self.card, self.task, self.model = model.card, model.task, model.model
        self._inner, self.calls, self.after = model, 0, after

    def predict_batch(self, *images):
        self.calls += 1
        if self.calls > self.after:
            raise RuntimeError("simulated failure (device lost)")
        return self._inner.predict_batch(*images)


def test_failure_leaves_no_partial_output_and_resumes(shared_data, tmp_path):
    src = shared_data / fx.HRO
    model = fx.tiny_model("land_cover")
    opts = {
        "tile": 128,
        "overlap": 32,
        "batch_size": 4,
        "block": 128,
        "progress": False,
        "vectorize": False,
    }
    # failing at once: nothing at all is left behind
    out = tmp_path / "a" / "pred.tif"
    out.parent.mkdir()
    with pytest.raises(RuntimeError, match="simulated"):
        predict_raster(_Failing(model, 0), src, out, **opts)
    assert list(out.parent.iterdir()) == []
    # failing mid-way: no output and no temporary file; only the named resumable state
    with pytest.raises(RuntimeError, match="simulated"):
        predict_raster(_Failing(model, 1), src, out, **opts)
    left = sorted(p.name for p in out.parent.iterdir())
    assert left == ["pred.tif.dinogeo-partial"]
    kept = json.loads((partial_dir(out) / "state.json").read_text())["done"]
    assert kept and not (out.parent / "pred.tif").exists()
    predict_raster(model, src, out, resume=True, **opts)
    ref = tmp_path / "ref.tif"
    predict_raster(model, src, ref, **opts)
    with rasterio.open(out) as a, rasterio.open(ref) as b:
        np.testing.assert_array_equal(a.read(), b.read())
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "pred.qml",
        "pred.tif",
        "pred.tif.aux.xml",
    ]


def test_tiled_prediction_equals_whole_image_prediction(shared_data, tmp_path):
    """A conv net whose receptive field fits the blend margin: tiles stitch without seams."""
    src_path = shared_data / fx.RGB_BYTE
    model = fx.tiny_model("canopy_height")
    out = tmp_path / "tiled.tif"
    predict_raster(model, src_path, out, tile=128, overlap=32, batch_size=4, progress=False)
    src = open_for_card(src_path, model.card)
    # the whole image as one window, read as prediction reads windows (pixels valid in every
    # band, invalid ones filled with their nearest valid pixel)
    (img,), valid = window_reader([src])(rasterio.windows.Window(0, 0, src.width, src.height))
    with torch.no_grad():
        whole = model.predict_batch(torch.from_numpy(img[None]))[0, 0].numpy()
    whole = np.clip(whole, 0, 96)
    with rasterio.open(out) as ds:
        tiled = ds.read(1)
        nodata = ds.nodata
    assert (tiled[~valid] == nodata).all()
    assert whole[valid].std() > 0.2, "the model output varies across the image"
    # Windows on the lattice may reach past the bottom/right border, where the net's hidden
    # activations are not zero-padded as in a whole-image pass: compare all but those 3 px. Near
    # the nodata collar a window and the whole image may copy different (equally near) valid
    # pixels into the same invalid one: compare beyond the net's 3-pixel reach from it.
    inner = ndimage.binary_erosion(valid, iterations=3)
    inner[-3:, :] = False
    inner[:, -3:] = False
    np.testing.assert_allclose(tiled[inner], whole[inner], atol=1e-4)
    np.testing.assert_allclose(tiled[valid], whole[valid], atol=2.0)


def test_embed_cli_writes_georeferenced_features_and_pca(shared_data, tmp_path):
    from dinogeo.models import create_backbone, save_backbone

    torch.manual_seed(0)
    bb = create_backbone("vit_test_patch16_dinov3", in_chans=3)
    card = fx.rgb_card()
    card.embed_dim = bb.embed_dim
    ckpt = tmp_path / "bb.safetensors"
    save_backbone(ckpt, bb, card)
    src_path = shared_data / fx.RGB_BYTE
    out = tmp_path / "emb.zarr"
    args = [
        "embed",
        "--backbone",
        str(ckpt),
        str(src_path),
        "-o",
        str(out),
        "--tile",
        "256",
        "--overlap",
        "64",
        "--quiet",
    ]
    assert main(args) == 0
    src = open_source(src_path, "rgb_uint8", ["red", "green", "blue"])
    feats = open_source(out)
    assert feats.crs == src.crs
    assert feats.transform.almost_equals(src.transform @ Affine.scale(16))
    assert (len(feats.sensor.bands), feats.height, feats.width) == (
        bb.embed_dim,
        -(-src.height // 16),
        -(-src.width // 16),
    )
    data, ok = feats.read(rasterio.windows.Window(0, 0, feats.width, feats.height))
    assert 0.2 < (~ok).mean() < 0.6, "the nodata collar has no features"
    assert np.isfinite(data[:, ok]).all()
    with rasterio.open(tmp_path / "emb_pca.tif") as ds:
        assert ds.count == 3 and ds.dtypes[0] == "uint8" and ds.crs == src.crs
        assert ds.transform.almost_equals(feats.transform)
        # whole patches only: the picture's extent stays inside the source's
        assert (ds.height, ds.width) == (src.height // 16, src.width // 16)
        b, s = ds.bounds, src.bounds
        assert b.left >= s.left and b.right <= s.right and b.bottom >= s.bottom and b.top <= s.top
        assert (
            s.right - b.right < 16 * src.transform.a and b.bottom - s.bottom < 16 * src.transform.a
        )
        assert [c.name for c in ds.colorinterp] == ["red", "green", "blue"]
        rgb = ds.read()
    ok = ok[: src.height // 16, : src.width // 16]
    assert (rgb[:, ok] > 0).all() and (rgb[:, ~ok] == 0).all()
    assert rgb[:, ok].std() > 20, "PCA spreads the colours"
    with rasterio.open(tmp_path / "emb_pca.png") as png:
        assert png.count == 3 and png.width == src.width // 16
    assert main(args) == 1, "outputs are not overwritten"
    tif = tmp_path / "emb.tif"
    args_tif = [
        "embed",
        "--backbone",
        str(ckpt),
        str(shared_data / fx.HRO),
        "-o",
        str(tif),
        "--no-pca",
        "--quiet",
        "--tile",
        "256",
    ]
    assert main(args_tif) == 0
    with rasterio.open(tif) as ds:
        assert ds.count == bb.embed_dim and ds.dtypes[0] == "float32"


@pytest.mark.distributed
def test_two_gloo_ranks_shard_blocks_and_rank0_writes(shared_data, tmp_path):
    import torch.multiprocessing as mp

    src = shared_data / fx.HRO
    opts = {
        "tile": 128,
        "overlap": 32,
        "batch_size": 4,
        "block": 128,
        "progress": False,
        "vectorize": False,
    }
    dist_out = tmp_path / "dist.tif"
    mp.spawn(
        fx.distributed_worker,
        args=(2, str(tmp_path / "init"), str(src), str(dist_out), opts),
        nprocs=2,
    )
    ref = tmp_path / "ref.tif"
    predict_raster(fx.tiny_model("land_cover"), src, ref, **opts)
    with rasterio.open(dist_out) as a, rasterio.open(ref) as b:
        np.testing.assert_array_equal(a.read(), b.read())
        assert a.profile == b.profile
    left = {p.name for p in tmp_path.iterdir()} - {"init", "ref.tif", "ref.qml", "ref.tif.aux.xml"}
    assert left == {"dist.tif", "dist.qml", "dist.tif.aux.xml"}, (
        "rank 0 wrote one output, no leftovers"
    )
