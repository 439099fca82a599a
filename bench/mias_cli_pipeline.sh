#!/usr/bin/env bash
# mini-MIAS through the package's own stages (no bench code): ingest -> preprocess ->
# split -> pretrain-patches -> train (attention and baseline, frozen patch-pretrained
# backbone) -> predict -> evaluate. One patient-level train/val/test split, so the test
# AUC rests on ~50 images: this checks that the CLI recipe works on real mammograms; the
# cross-validated figures are bench/mias_cv.py / mias_patchdet.py (docs/real-data.md).
#
#   bash bench/mias_cli_pipeline.sh [OUT] [DATA]      (about 15 min on a 2-core CPU)
set -euo pipefail
OUT=${1:-runs/mias_cli}
DATA=${2:-../shared/datasets/mini-mias}
M=${MAMMOLENS:-.venv/bin/mammolens}
mkdir -p "$OUT"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
t0=$(date +%s)
$M ingest mias "$DATA" -o "$OUT/manifest.csv"
$M preprocess "$OUT/manifest.csv" --out "$OUT/cache" --size 512x416 -j 1
$M split "$OUT/manifest.csv" --val 0.2 --test 0.25 --seed 0 -o "$OUT/split.csv"
$M pretrain-patches "$OUT/split.csv" -c "$OUT/cache" -o "$OUT/patch_tiny.pt" --arch tiny --tiny-width 16 \
    --patch-size 96 --per-lesion 16 --background 12 --classes 2 --epochs 10 --device cpu --quiet
COMMON=(--config mias --set model.arch=tiny --set model.tiny_width=16 --set "model.pretrained=$OUT/patch_tiny.pt"
        --set train.freeze=backbone --set optim.lr=3e-3 --set train.max_epochs=30 --set train.early_stop_patience=10
        --set data.num_workers=0 --set train.accelerator=cpu --set predict.gradcam=false --quiet)
$M train "$OUT/split.csv" -c "$OUT/cache" --out "$OUT/run_attention" --model attention "${COMMON[@]}"
$M train "$OUT/split.csv" -c "$OUT/cache" --out "$OUT/run_baseline" --model baseline "${COMMON[@]}"
for k in attention baseline; do
  $M predict "$OUT/run_$k" "$OUT/split.csv" -c "$OUT/cache" --out "$OUT/pred_$k.csv" --heatmaps "$OUT/heatmaps_$k" \
      --no-gradcam --quiet
done
$M evaluate "$OUT/pred_attention.csv" --manifest "$OUT/split.csv" --compare "$OUT/pred_baseline.csv" \
    --run "$OUT/run_attention" --out "$OUT/eval" --json > "$OUT/eval.json"
echo "wall time: $(( $(date +%s) - t0 )) s" | tee "$OUT/wall_time.txt"
