#!/usr/bin/env bash
# The short-horizon-bias experiment of issue 23 (prepared; its cost is measured below).
#
# learnable_momentum by default (lr 0.5 and momentum 0.9 at the start, as in the README's MNIST
# study; two meta-parameters) meta-trained for 1,000-step runs of the paper's MNIST MLP, three
# seeds, two ways on the same inner-step budget and the same meta-optimizer (Adam at META_LR):
#   * TBPTT: unrolls of 20, exact meta-gradients (meta.second_order=true), TASKS tasks of 1,000
#     steps (50 meta-steps each);
#   * PES: 8 particles, truncations of 20, episodes LogUniform(100, 1000), TASKS * 1000 / 160
#     meta-iterations (8 particles x 20 steps each).
# Both validate 8 times on 20 fixed problems over meta.horizon=1000 steps (the selection
# criterion is the final loss there; iteration 0 is the untrained start). Then the baseline's
# lr is tuned at 1,000 steps, and PES's best.pt, TBPTT's latest.pt and the untrained start are
# evaluated on the 100 test problems over 1,000 steps (scripts/short_horizon_bias_table.py).
# The claim to check: TBPTT's best is its untrained start or worse (short-horizon bias), PES's
# beats both the start and the tuned baseline (momentum, or Adam with OPTIMIZER=learnable_adam).
#
# Cost on the 2-core AMD EPYC (one thread, 2026-12-02, beside three or four other jobs): a TBPTT
# task of 1,000 steps 7-20 s, a PES iteration 2-4 s, a validation 15-40 s; the three seeds of
# both took 67 min, the tuning 13 min, each evaluation of 100 problems several minutes.
#
# Usage (from the repository root): bash scripts/short_horizon_bias.sh
#   SEEDS="0 1 2" TASKS=40 META_LR=0.01 DATA=/work/shared/data/mnist  (the defaults)
#   START_LR=0.5 START_MOMENTUM=0.9 PREFIX=shb  (the start, and the runs' name prefix)
#   OPTIMIZER=learnable_momentum BASELINE=momentum  (or learnable_adam and adam: lr, betas and eps
#     meta-trained from Adam's defaults betas (0.9, 0.999), eps 1e-8; START_MOMENTUM unused)
#   SCHEDULE_DEGREE=0  (2: a learned log-lr schedule, quadratic in the fraction of the 1,000 steps)
#   FIGURE=short_horizon_bias (docs/figures/FIGURE.png)
#   EVALUATE_ONLY=1 skips the meta-training and the tuning (done before)
set -euo pipefail
SEEDS=${SEEDS:-0 1 2}
TASKS=${TASKS:-40}
META_LR=${META_LR:-0.01}
PES_ITERATIONS=$((TASKS * 1000 / 160))
DATA=${DATA:-/work/shared/data/mnist}
START_LR=${START_LR:-0.5}
START_MOMENTUM=${START_MOMENTUM:-0.9}
P=${PREFIX:-shb}
C="experiment=paper_mnist data_dir=$DATA threads=1 logger=none progress=false meta.horizon=1000
   eval.steps=1000 meta.meta_lr=$META_LR"
OPTIMIZER=${OPTIMIZER:-learnable_momentum}
BASELINE=${BASELINE:-momentum}
# the start as the baseline's own hyperparameters: the untrained learned rule is the baseline there
START="optimizer.hyperparameters.lr=$START_LR"
[ "$BASELINE" = momentum ] && START="$START optimizer.hyperparameters.momentum=$START_MOMENTUM"
L="optimizer=$OPTIMIZER $START
   optimizer.hyperparameters.schedule_degree=${SCHEDULE_DEGREE:-0}
   optimizer.hyperparameters.schedule_horizon=$([ "${SCHEDULE_DEGREE:-0}" = 0 ] && echo 0 || echo 1000)"
RUNS=runs/meta_train/mnist
# train.py exits 1 when meta-training never beat the untrained start; its best.pt is then that
# start, which for this experiment is a result, not a failure
kept_best() { [ -f "$RUNS/$1/checkpoints/best.pt" ] || exit 1; }
if [ -z "${EVALUATE_ONLY:-}" ]; then  # EVALUATE_ONLY=1: the runs and the tuning are done
for s in $SEEDS; do
  ${PYTHON:-python} train.py $C $L mode=meta_train meta.unroll=20 meta.second_order=true \
      meta.iterations=$TASKS meta.val_every=$((TASKS / 8)) seed=$s run_name=${P}_tbptt_s$s || kept_best ${P}_tbptt_s$s
  ${PYTHON:-python} train.py $C $L mode=meta_train meta.estimator=pes meta.particles=8 meta.unroll=20 \
      meta.lengths=log_uniform meta.min_length=100 meta.max_length=1000 \
      meta.iterations=$PES_ITERATIONS meta.val_every=$((PES_ITERATIONS / 8)) seed=$s \
      run_name=${P}_pes_s$s || kept_best ${P}_pes_s$s
done
${PYTHON:-python} train.py $C mode=tune optimizer=$BASELINE run_name=${P}_${BASELINE}_tuned
fi
# on the test problems: PES's kept weights, TBPTT's last ones (its kept ones are the untrained
# start whenever it never beat it), and the untrained start once
E="$C $L mode=evaluate"
for s in $SEEDS; do
  ${PYTHON:-python} train.py $E checkpoint=$RUNS/${P}_pes_s$s/checkpoints/best.pt run_name=${P}_eval_pes_s$s
  ${PYTHON:-python} train.py $E checkpoint=$RUNS/${P}_tbptt_s$s/checkpoints/latest.pt \
      run_name=${P}_eval_tbptt_last_s$s
done
# the untrained learned rule is its baseline at the start
${PYTHON:-python} train.py $C mode=evaluate optimizer=$BASELINE $START run_name=${P}_eval_untrained
${PYTHON:-python} scripts/validation_curves.py --out docs/figures/${FIGURE:-short_horizon_bias}.png \
    $RUNS/${P}_tbptt_s* $RUNS/${P}_pes_s*
