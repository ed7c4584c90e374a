#!/bin/bash
# GPU check of dinogeo pretraining, run from the repository root on a machine with one CUDA GPU:
#   bash bench/gpu/check.sh [OUT_DIR]
# 1. bench/pretrain_step.py on CUDA (bf16 autocast), ViT-S/16 at the recipe crops, batch 64
# 1b. bench/augment.py: the batched multi-crop on the GPU; dinogeo pretrain (ViT-S/16) reading
#    real chips vs in-memory data (throughput ratio, target >= 0.9)
# 2. the tiny default config on the GPU (30 steps)
# 3. ViT-S/16 stage 1 (configs/ssl/pretrain.yaml) under FSDP (configs/ssl/fsdp.yaml), 120 steps
#    on the Aberystwyth Sentinel-2 scene, bf16, checkpoints every 60 steps
# 4. stage 2, Gram anchoring (configs/ssl/gram_anchor.yaml), resumed from stage 1's last.ckpt
#    under FSDP, to step 150 (Gram loss from step 120, Gram teacher refreshed at 130 and 140)
# 5. flash attention through timm's Eva blocks against the math kernel; the backbone exported by
#    the FSDP run loads with its weight card and embeds a real chip
# Then a summary of the logged losses and health metrics. Needs ~5 minutes on one H100.
set -u
OUT=${1:-runs/gpu_check}
DATA=${DINOGEO_SHARED_DATA:-../shared/data}
S2_4=$DATA/sentinel2-l1c-virginia-sattestdata/S2_18SVG_20160112_10m_B02-B03-B04-B08_crop.tif
ABER=$DATA/sentinel2-landcover-aberystwyth-rsgislib/sen2_20210527_aber_10band_crop.tif
DG="python3 -m dinogeo.cli.main"
mkdir -p "$OUT"; rm -rf runs/gpu runs/ssl_default
export PYTHONUNBUFFERED=1
elapsed() { python3 -c "import time; print(round(time.time() - $1, 1))"; }

echo "=== 1. step time, ViT-S/16 recipe crops"
python3 bench/pretrain_step.py --device cuda --crops spec --batch 64 --steps 10 --only ViT-S/16 \
    2>&1 | tee "$OUT/step_bench.txt"
echo "=== 1b. input pipeline: batched multi-crop on the GPU, dinogeo pretrain real vs in-memory data"
python3 bench/augment.py --rounds 3 --workers 8 --pretrain-steps 40 2>&1 | tee "$OUT/augment.txt"
echo "=== 2. tiny default config on the GPU"
$DG pretrain --config configs/ssl/default.yaml --trainer.accelerator gpu \
    --data.sources "[$S2_4]" --data.sensor sentinel2_l1c --data.bands '[B02, B03, B04, B08]' \
    --trainer.enable_progress_bar false \
    > "$OUT/tiny.log" 2>&1
echo "rc $?"
echo "=== 3. ViT-S/16 stage 1 under FSDP"
s=$(date +%s.%N)
$DG pretrain --config configs/ssl/pretrain.yaml --config configs/ssl/fsdp.yaml \
    --config bench/gpu/stage1.yaml --trainer.devices 1 --data.sources "[$ABER]" \
    > "$OUT/stage1.log" 2>&1
echo "rc $? wall $(elapsed "$s") s"; tail -c 400 "$OUT/stage1.log" | tr "\r" "\n" | tail -3
echo "=== 4. stage 2 (Gram anchoring) resumed from stage 1 under FSDP"
s=$(date +%s.%N)
$DG pretrain --config configs/ssl/pretrain.yaml --config configs/ssl/fsdp.yaml \
    --config bench/gpu/stage1.yaml --config configs/ssl/gram_anchor.yaml \
    --config bench/gpu/stage2.yaml --trainer.devices 1 --data.sources "[$ABER]" \
    --ckpt_path last > "$OUT/stage2.log" 2>&1
echo "rc $? wall $(elapsed "$s") s"; tail -c 400 "$OUT/stage2.log" | tr "\r" "\n" | tail -3
cp runs/ssl_default/csv/version_0/metrics.csv "$OUT/metrics_tiny.csv"
cp runs/gpu/csv/version_0/metrics.csv "$OUT/metrics_stage1.csv"
cp runs/gpu/csv/version_1/metrics.csv "$OUT/metrics_stage2.csv"
echo "=== 5. flash attention, exported backbone"
python3 bench/gpu/attention_export.py runs/gpu/backbone.safetensors "$ABER" "$OUT"
