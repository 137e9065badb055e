#!/usr/bin/env bash
# Meta-train mlp_lopt on the paper's MNIST task, the way the paper's LSTM is trained
# (experiment=paper_mnist: 100-step runs of the 784-20-10 sigmoid MLP, TBPTT with unrolls of 20,
# meta-Adam 1e-3, the sum of losses), for the generalization study beside the LSTM
# (docs/results/paper_mnist.md). 8 hidden units, untrained = Adam(0.03). One seed per call, one
# thread, resumable (add resume_from=docs/results/mnist/paper_mlp_lopt_s<k>_latest.pt):
#   scripts/paper_mnist_mlp_lopt.sh SEED [extra overrides]
# RUN_NAME=... names another run, e.g. the same rule with PES over the whole 100-step run:
#   RUN_NAME=paper_mlp_lopt_pes_s0 scripts/paper_mnist_mlp_lopt.sh 0 meta.estimator=pes \
#       meta.objective=final meta.iterations=625   (625 truncations of 8 particles x 20 steps:
#                                                   the 100,000 inner steps of 1,000 tasks)
# The kept optimizer: runs/meta_train/mnist/paper_mlp_lopt_s<k>/checkpoints/best.pt
set -euo pipefail
cd "$(dirname "$0")/.."
seed=${1:?usage: scripts/paper_mnist_mlp_lopt.sh SEED [overrides]}
shift
exec "${PYTHON:-python}" train.py experiment=paper_mnist mode=meta_train optimizer=mlp_lopt \
    optimizer.hyperparameters.hidden_size=8 optimizer.hyperparameters.step_mult=0.03 \
    optimizer.hyperparameters.exp_mult=0.2 meta.iterations=1000 meta.val_every=100 \
    seed="$seed" run_name="${RUN_NAME:-paper_mlp_lopt_s$seed}" threads=1 "$@"
