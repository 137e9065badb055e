#!/usr/bin/env bash
# The suite's headline candidate with the fraction of the run done among its inputs: the recipe
# of scripts/suite_pes.sh (mlp_lopt, 8 hidden units, untrained = Adam(0.03), PES with 20
# particles on conf/task/suite_train.yaml, truncations of 20, episodes LogUniform(50, 600),
# log-relative objective, 8,000 meta-steps) plus optimizer.hyperparameters.horizon_features=true,
# so it can learn a schedule that ends with each run. One seed per call, one thread, resumable:
#   scripts/suite_pes_horizon.sh SEED [extra overrides, e.g. resume_from=...latest.pt]
set -euo pipefail
cd "$(dirname "$0")/.."
seed=${1:?usage: scripts/suite_pes_horizon.sh SEED [overrides]}
shift
exec bash scripts/suite_pes.sh "$seed" optimizer.hyperparameters.horizon_features=true \
    run_name="suite_mlp8h_pes_s$seed" "$@"
