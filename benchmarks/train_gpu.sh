#!/usr/bin/env bash
# From nothing to a trained, exported and evaluated generator on one GPU, in about eight minutes:
# the real-image classifier, a linkage-trained generator (the preset's lighter U-Net, under a
# quarter of the paper's 24 GFLOP) for TRAIN_MINUTES, the attacker suite on real images and on
# the generator's output, the ONNX export with its measured privacy, and the table.
#
#   benchmarks/train_gpu.sh [WORK]          # WORK default runs/gpu; DEID_SHARED names the data
#
# Knobs (environment): PRESET (paper), DEVICE (cuda), TRAIN_MINUTES (4), RUNS (3 learned
# attackers), MU (0.15), INTENSITY (0.15). The toy run of tests/test_train_gpu_script.py sets
# PRESET=toy DEVICE=cpu to prove the chain in seconds.
set -euo pipefail

WORK=${1:-runs/gpu}
PRESET=${PRESET:-paper}
DEVICE=${DEVICE:-cuda}
TRAIN_MINUTES=${TRAIN_MINUTES:-4}
RUNS=${RUNS:-3}
MU=${MU:-0.15}
INTENSITY=${INTENSITY:-0.15}
SHARED=${DEID_SHARED:-../shared}
mkdir -p "$WORK"
started=$(date +%s)

common=(--shared "$SHARED" --work "$WORK" --preset "$PRESET" --device "$DEVICE")
checkpoint=$(deid model train "${common[@]}" --light --mu "$MU" --intensity "$INTENSITY" \
    --epochs 1000 --budget-minutes "$TRAIN_MINUTES" | tail -n 1)
trained=$(date +%s)
deid model evaluate "${common[@]}" --runs "$RUNS" real > /dev/null
deid model evaluate "${common[@]}" --runs "$RUNS" "$checkpoint" > /dev/null
name=$(basename "$checkpoint" .pt)
name=${name#generator-}
deid model export "$checkpoint" --out "$WORK/deform.onnx" \
    --evaluation "$WORK/eval-$name.json" --real "$WORK/eval-real.json" > /dev/null
deid model report --work "$WORK"
finished=$(date +%s)
echo
echo "device $DEVICE, preset $PRESET: trained in $((trained - started)) s (classifier and generator), "\
"evaluated and exported in $((finished - trained)) s, $((finished - started)) s in all"
echo "model $WORK/deform.onnx, metadata $WORK/deform.json"
