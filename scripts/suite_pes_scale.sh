#!/usr/bin/env bash
# The suite's headline candidate with its parameters' scale among its inputs: the recipe of
# scripts/suite_pes.sh (mlp_lopt, 8 hidden units, untrained = Adam(0.03), PES with 20 particles
# on conf/task/suite_train.yaml, truncations of 20, episodes LogUniform(50, 600), log-relative
# objective, 8,000 meta-steps) plus optimizer.hyperparameters.scale_feature=true: each tensor's
# log10 parameter RMS, unnormalised, so one rule can take larger steps on tensors of larger
# weights (the suite's tuned Adam lr runs from 0.01 to 1). One seed per call, one thread,
# resumable:
#   scripts/suite_pes_scale.sh SEED [extra overrides, e.g. resume_from=...latest.pt]
set -euo pipefail
cd "$(dirname "$0")/.."
seed=${1:?usage: scripts/suite_pes_scale.sh SEED [overrides]}
shift
exec bash scripts/suite_pes.sh "$seed" optimizer.hyperparameters.scale_feature=true \
    run_name="suite_mlp8s_pes_s$seed" "$@"
