"""One configuration mechanism: every command's options are its function's signature.

``--config FILE.yaml`` gives the same result as the flags (predict, embed, validate on real
imagery), ``--print_config`` writes a file ``--config`` reads back, and help text is the
function's docstring.
"""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest
import rasterio
import yaml

from dinogeo.cli.command import COMMANDS, Command, register_command, resolve
from dinogeo.cli.main import main
from tests.data.inference import data as fx

ABER = "sentinel2-landcover-aberystwyth-rsgislib"
S2_BANDS = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
PARSED = [name for name, cmd in COMMANDS.items() if not cmd.raw]


def _signature_names(command: Command) -> set[str]:
    names = set(inspect.signature(resolve(command.function)).parameters)
    if command.run is not None:
        names |= set(list(inspect.signature(resolve(command.run)).parameters)[1:])
    return names


def _config(tmp_path, name: str, values: dict) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


def _pixels(path):
    with rasterio.open(path) as ds:
        return ds.read(), ds.transform, ds.crs


@pytest.mark.parametrize("name", PARSED)
def test_options_are_the_signature(name):
    """The parser holds exactly the function's (and run hook's) parameters: no drift possible."""
    command = COMMANDS[name]
    dests = {a.dest for a in command.parser()._actions} - {"help", "config", "print_config"}
    assert dests == _signature_names(command)


@pytest.mark.parametrize("name", PARSED)
def test_help_comes_from_docstrings(name):
    command = COMMANDS[name]
    text = " ".join(command.parser().format_help().split())
    from docstring_parser import parse

    fn = resolve(command.function)
    described = [p for p in parse(inspect.getdoc(fn) or "").params if p.description]
    assert described, f"{fn.__qualname__} documents no parameter"
    for param in described:
        words = " ".join(param.description.split())[:30]
        assert words in text, f"{name}: help lacks the docstring of {param.arg_name}"
    assert "--config" in text and "--print_config" in text


def test_print_config_round_trips(tmp_path, capsys):
    argv = ["scene.tif", "--model", "m.safetensors", "-o", "out.tif", "--tile", "256",
            "--batch-size", "2", "--quiet", "--no-vectorize", "--probabilities"]  # fmt: skip
    parser = COMMANDS["predict"].parser()
    with pytest.raises(SystemExit) as stop:
        COMMANDS["predict"].main([*argv, "--print_config"])
    assert stop.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["src"] == ["scene.tif"] and printed["dst"] == "out.tif"
    assert printed["tile"] == 256 and printed["batch_size"] == 2
    assert printed["progress"] is False and printed["vectorize"] is False
    assert printed["probabilities"] is True
    path = _config(tmp_path, "printed", printed)
    from dinogeo.cli.command import _rewrite

    direct = parser.parse_args(_rewrite(argv, parser, COMMANDS["predict"].all_switches())).as_dict()
    again = parser.parse_args(["--config", path]).as_dict()
    direct.pop("config"), again.pop("config")
    assert again == direct


def test_predict_and_embed_config_equal_flags(shared_data, tmp_path):
    bundle = fx.write_bundle(tmp_path / "lc.safetensors")
    src = shared_data / fx.RGB_BYTE
    fast = {"tile": 256, "overlap": 32, "batch_size": 4}
    by_flags = tmp_path / "flags.tif"
    assert main(["predict", "--model", str(bundle), str(src), "-o", str(by_flags), "--tile",
                 "256", "--overlap", "32", "--batch-size", "4", "--quiet"]) == 0  # fmt: skip
    by_config = tmp_path / "config.tif"
    cfg = _config(tmp_path, "predict", {"model": str(bundle), "src": [str(src)],
                                        "dst": str(by_config), "progress": False, **fast})  # fmt: skip
    assert main(["predict", "--config", cfg]) == 0
    a, b = _pixels(by_flags), _pixels(by_config)
    assert np.array_equal(a[0], b[0]) and a[1] == b[1] and a[2] == b[2]
    assert (a[0] != 0).any()
    # command-line values win over the file's
    third = tmp_path / "third.tif"
    assert main(["predict", "--config", cfg, "-o", str(third), "--probabilities"]) == 0
    with rasterio.open(third) as ds:
        assert ds.count == 1 + 11  # class + one probability band per WorldCover class

    backbone = tmp_path / "backbone.safetensors"
    from dinogeo.models.backbone import create_backbone
    from dinogeo.models.backbone_file import save_backbone

    card = fx.rgb_card("rgb_uint8", ("red", "green", "blue"))
    net = create_backbone(card.arch, in_chans=3)
    card.embed_dim = net.embed_dim
    save_backbone(backbone, net, card)
    feats_flags, feats_cfg = tmp_path / "f_flags.tif", tmp_path / "f_cfg.tif"
    assert main(["embed", "--backbone", str(backbone), str(src), "-o", str(feats_flags),
                 "--tile", "256", "--overlap", "32", "--no-pca", "--quiet"]) == 0  # fmt: skip
    cfg = _config(tmp_path, "embed", {"backbone": str(backbone), "src": str(src),
                                      "dst": str(feats_cfg), "pca": False, "progress": False,
                                      "tile": 256, "overlap": 32})  # fmt: skip
    assert main(["embed", "--config", cfg]) == 0
    a, b = _pixels(feats_flags), _pixels(feats_cfg)
    assert a[0].shape[0] == net.embed_dim and np.isfinite(a[0]).any()
    assert np.array_equal(a[0], b[0], equal_nan=True) and a[1] == b[1]
    assert not (tmp_path / "f_cfg_pca.png").exists()


def test_validate_config_equals_flags(shared_data, tmp_path, capsys):
    bundle = fx.write_bundle(
        tmp_path / "aber.safetensors", "land_cover_aberystwyth", sensor="sentinel2_l2a",
        bands=S2_BANDS,
    )  # fmt: skip
    image = shared_data / ABER / "sen2_20210527_aber_10band_crop.tif"
    labels = shared_data / ABER / "sen2_20210527_aber_cls_crop.tif"
    flags_json, cfg_json = tmp_path / "flags.json", tmp_path / "cfg.json"
    argv = ["validate", "--model", str(bundle), "--image", str(image), "--labels", str(labels),
            "--scale", "0.001", "--chip-size", "128", "--json", str(flags_json), "--quiet"]  # fmt: skip
    assert main(argv) == 0
    cfg = _config(tmp_path, "validate", {
        "bundle": str(bundle), "image": str(image), "labels": str(labels), "scale": 0.001,
        "chip_size": 128, "json": str(cfg_json), "progress": False, "format": "json",
    })  # fmt: skip
    capsys.readouterr()
    assert main(["validate", "--config", cfg]) == 0
    printed = json.loads(capsys.readouterr().out)
    a, b = json.loads(flags_json.read_text()), json.loads(cfg_json.read_text())
    assert a["metrics"] == b["metrics"] == printed["metrics"]
    assert a["metrics"]["pixels"] > 0 and 0.0 <= a["metrics"]["accuracy"] <= 1.0


def test_register_command_from_a_function(capsys, tmp_path):
    def scale(values: list[float], factor: float = 2.0, *, verbose: bool = False) -> int:
        """Multiply numbers.

        Args:
            values: the numbers.
            factor: what to multiply by.
            verbose: print the factor too.
        """
        print(" ".join(f"{v * factor:g}" for v in values) + (f" x{factor:g}" if verbose else ""))
        return 0

    command = register_command("_scale_test", scale, positional=("values",),
                               switches={"-v": ("verbose", True)})  # fmt: skip
    try:
        assert main(["_scale_test", "1", "2.5", "--factor", "3", "-v"]) == 0
        assert capsys.readouterr().out.strip() == "3 7.5 x3"
        cfg = _config(tmp_path, "scale", {"values": [1, 2], "factor": 0.5})
        assert main(["_scale_test", "--config", cfg]) == 0
        assert capsys.readouterr().out.strip() == "0.5 1"
        assert "the numbers." in command.parser().format_help()
        with pytest.raises(ValueError, match="already registered"):
            register_command("_scale_test", scale)
    finally:
        COMMANDS.pop("_scale_test")


def test_every_command_is_listed_and_takes_config(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)
    with pytest.raises(SystemExit):
        main(["embed", "--help"])
    assert "--config" in capsys.readouterr().out
