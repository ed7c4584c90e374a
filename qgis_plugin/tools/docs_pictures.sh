#!/usr/bin/env bash
# Regenerate the pictures of docs/qgis.md: real QGIS runs the dinogeo algorithms on real imagery
# (../shared/data) and draws the outputs offscreen. Needs QGIS (apt-get install qgis
# python3-qgis) and the dinogeo venv (make venv). About 20 minutes on 2 busy CPU cores.
#   bash qgis_plugin/tools/docs_pictures.sh [WORK_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
work=${1:-runs/qgis_docs}
mkdir -p "$work"
# the backbone: the tiny test ViT (width 64, depth 4) for Landsat 7 ETM+, random weights
# (seed 0): the pictures show the plugin at work, not the quality of a pretrained backbone
.venv/bin/python - "$work/tiny_landsat7.safetensors" <<'PY'
import sys

import torch

from dinogeo.models import save_backbone
from dinogeo.trainers.base import resolve_backbone

torch.manual_seed(0)
backbone, card = resolve_backbone("vit_test_patch16_dinov3", sensor="landsat7_etm")
save_backbone(sys.argv[1], backbone, card)
PY
QT_QPA_PLATFORM=offscreen QGIS_PLUGINPATH="$PWD/qgis_plugin" \
  DINOGEO_EXECUTABLE="$PWD/.venv/bin/dinogeo" PYTHONPATH="$PWD" \
  /usr/bin/python3 qgis_plugin/tools/render_pictures.py "$work/tiny_landsat7.safetensors" \
  "${DINOGEO_SHARED_DATA:-../shared/data}" "$work" docs/img
