#!/usr/bin/env bash
# Meta-train the suite's headline candidate: mlp_lopt (8 hidden units, untrained = Adam(0.03))
# with PES on the training distribution conf/task/suite_train.yaml (20 particles stratified over
# its five layouts, truncations of 20 steps, episodes LogUniform(50, 600) steps, mean log loss
# relative to the start). One seed per call, one thread, resumable:
#   scripts/suite_pes.sh SEED [extra overrides, e.g. resume_from=docs/results/suite/suite_mlp8_pes_s0_latest.pt]
# Evaluate with: python train.py experiment=suite "checkpoints=[runs/meta_train/suite_train/suite_mlp8_pes_s<k>/checkpoints/best.pt,...]"
set -euo pipefail
cd "$(dirname "$0")/.."
seed=${1:?usage: scripts/suite_pes.sh SEED [overrides]}
shift
exec "${PYTHON:-python}" train.py mode=meta_train task=suite_train optimizer=mlp_lopt \
    optimizer.hyperparameters.hidden_size=8 optimizer.hyperparameters.step_mult=0.03 \
    optimizer.hyperparameters.exp_mult=0.2 \
    meta.estimator=pes meta.particles=20 meta.unroll=20 meta.lengths=log_uniform \
    meta.min_length=50 meta.max_length=600 meta.horizon=200 meta.objective=log_relative \
    meta.es_difference=normalized meta.meta_lr=3e-3 meta.iterations=8000 meta.val_every=250 \
    meta.val_instances=8 meta.checkpoint_every=100 seed="$seed" \
    run_name="suite_mlp8_pes_s$seed" threads=1 "$@"
