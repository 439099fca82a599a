#!/usr/bin/env bash
# The real-data figures of docs/real-data.md, through the package's own commands only:
# mini-MIAS (development part) -> manifest -> caches -> `mammolens cv` for the mias preset
# and its ablations -> `mammolens cv-compare` paired DeLong tests -> bench/results/.
#
#   bash bench/mias_cv.sh [OUT] [DATA] [SEEDS]        (defaults: runs/mias_cv, ../shared/datasets/mini-mias, 0,1,2)
#   ONLY="mias random" bash bench/mias_cv.sh ...       (a subset of the configurations below)
#
# Configurations (each a `mammolens cv` folder under OUT):
#   mias          the preset: ImageNet EfficientNet-Lite0 (offline weights), frozen, heads
#                 fitted on its features at 200 um (1024x832), every finding supervising
#                 the localisation map, top-bottom flip at test time, contralateral
#                 difference score (w = 0.5)
#   um400         the preset at 400 um (512x416 cache): 200 vs 400 um
#   random400     um400 with random initial weights: ImageNet vs random at 400 um
#   random200     the preset with random initial weights: ImageNet vs random at 200 um
#   malignant     the localisation map supervised with malignant outlines only
#   finetune      + Shen et al.'s patch stage fine-tuning the trunk (patch.enabled=true)
#   finetune_top  + 3 epochs fine-tuning the trunk's top stage with the heads after them
#                 (LP-FT, heads.finetune_top_epochs=3): fine-tuned vs frozen ImageNet trunk
#   lite2         EfficientNet-Lite2 instead of Lite0 (offline weights too): the backbone
#   notta         no top-bottom flip at test time: the test-time flip's share
#   previous      the previous recipe (tiny ResNet trained from scratch on patches, frozen,
#                 whole-image stage at 400 um; session 2's mias preset)
# The contralateral-difference ablation is in each cv.json (`contralateral`) and in
# mias_compare_contralateral.json (score vs the image's own logit, every seed).
set -euo pipefail
OUT=${1:-runs/mias_cv}
DATA=${2:-../shared/datasets/mini-mias}
SEEDS=${3:-0,1,2}
ONLY=${ONLY:-"mias um400 random400 random200 malignant finetune finetune_top lite2 notta previous"}
M=${MAMMOLENS:-.venv/bin/mammolens}
RES=${RESULTS:-bench/results}
mkdir -p "$OUT" "$RES"
$M ingest mias "$DATA" -o "$OUT/mias.csv"
$M preprocess "$OUT/mias.csv" --out "$OUT/cache_1024x832" --size 1024x832 -j 1
$M preprocess "$OUT/mias.csv" --out "$OUT/cache_512x416" --size 512x416 -j 1
run() {  # name cache extra-args...
  local name=$1 cache=$2; shift 2
  case " $ONLY " in *" $name "*) ;; *) return 0 ;; esac
  local t0; t0=$(date +%s)
  $M cv "$OUT/mias.csv" --cache "$OUT/$cache" --config mias --seeds "$SEEDS" --out "$OUT/cv_$name" --quiet "$@"
  echo "$name: $(( $(date +%s) - t0 )) s wall ($(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg))" | tee -a "$OUT/wall_times.txt"
  cp "$OUT/cv_$name/cv.json" "$RES/mias_cv_$name.json"
}
run mias cache_1024x832
run um400 cache_512x416 --set data.cache_size=512x416
run random400 cache_512x416 --set data.cache_size=512x416 --set model.pretrained=none
run random200 cache_1024x832 --set model.pretrained=none
run malignant cache_1024x832 --set train.loc_target=malignant
run finetune cache_1024x832 --set patch.enabled=true
run finetune_top cache_1024x832 --set heads.finetune_top_epochs=3
run lite2 cache_1024x832 --set model.arch=efficientnet_lite2
run notta cache_1024x832 --set 'predict.tta=[]'
run previous cache_512x416 --set data.cache_size=512x416 --set model.arch=tiny --set model.tiny_width=16 \
    --set model.pretrained=none --set patch.enabled=true --set patch.patch_size=96 --set patch.per_lesion=16 \
    --set patch.background_per_image=12 --set patch.epochs=10 --set patch.freeze=none --set patch.batch_size=64 \
    --set heads.enabled=false --set train.freeze=backbone --set train.max_epochs=30 --set train.early_stop_patience=10 \
    --set optim.lr=3e-3 --set optim.plateau_patience=3 --set train.loc_target=malignant --set data.batch_size=8 \
    --set data.augment.hflip=0.5 --set predict.tta=[] --set predict.contralateral=0
for other in um400 random200 malignant finetune finetune_top lite2 notta previous; do
  [ -f "$OUT/cv_$other/cv.json" ] || continue
  $M cv-compare "$OUT/cv_mias" "$OUT/cv_$other" --out "$RES/mias_compare_mias_vs_$other.json"
done
[ -f "$OUT/cv_random400/cv.json" ] && $M cv-compare "$OUT/cv_um400" "$OUT/cv_random400" --out "$RES/mias_compare_um400_vs_random400.json"
# the preset's contralateral-difference score against the image's own (logit), per seed
[ -f "$OUT/cv_mias/cv.json" ] && $M cv-compare "$OUT/cv_mias" "$OUT/cv_mias" --score-a score --score-b logit --out "$RES/mias_compare_contralateral.json"
exit 0
