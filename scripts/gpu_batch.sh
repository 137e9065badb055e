#!/usr/bin/env bash
# A GPU batch for a session that is lent a device machine (prepared, never run: no machine started).
# The device machine has torch but not hydra and cannot reach PyPI, and ../shared does not travel:
#   pip download --no-deps -d .gpuwheels hydra-core==1.3.2 omegaconf==2.3.0 antlr4-python3-runtime==4.9.3
#   mkdir -p .gpudata && cp ../shared/data/mnist/*.gz .gpudata/
#   echo /.gpuwheels/ >> .git/info/exclude; echo /.gpudata/ >> .git/info/exclude
# then, through the device tool with carry [".gpudata", ".gpuwheels"]:
#   RUN_S=320 STUDY_S=190 B=8 VAL=50 bash scripts/gpu_batch.sh
# It smoke-tests device=cuda, meta-trains the issue-12 optimizers in parallel for RUN_S seconds
# (SIGTERM saves them), then runs the generalization study of their best.pt on the GPU.
set -x
pip install -q --no-index --no-build-isolation --find-links .gpuwheels hydra-core omegaconf antlr4-python3-runtime
export L2L_DATA_DIR=$PWD/.gpudata PYTHONPATH=$PWD PYTHONUNBUFFERED=1 WANDB_MODE=disabled OMP_NUM_THREADS=2
DEV=${DEV:-cuda}; RUN_S=${RUN_S:-300}; B=${B:-1}
nvidia-smi -L; python3 -c "import torch, hydra; print(torch.__version__, torch.cuda.is_available(), hydra.__version__)"
python3 train.py mode=meta_train device=$DEV experiment=paper_mnist meta.iterations=2 meta.batch_size=$B meta.val_every=1 meta.val_instances=4 logger=none progress=false run_name=smoke > smoke.log 2>&1 || { tail -30 smoke.log; exit 3; }
tail -2 smoke.log
C="experiment=paper_mnist mode=meta_train device=$DEV meta.iterations=10000 meta.batch_size=$B meta.val_every=${VAL:-100} logger=none progress=false $EXTRA"
M="task=mnist_mixture meta.scale_range=2.0 meta.objective=log_relative"
run() { timeout -s TERM $RUN_S python3 train.py $C "$@" > /dev/null 2>&1 & }
for s in 0 1 2; do
  run optimizer=lstm seed=$s run_name=lstm_s$s
  run optimizer=rnnprop seed=$s run_name=rnnprop_mix_s$s $M
  run optimizer=adam_anchored optimizer.hyperparameters.lr=0.02 seed=$s run_name=adam_anchored_mix_s$s $M
done
run optimizer=rnnprop seed=0 run_name=rnnprop_s0
run optimizer=adam_anchored optimizer.hyperparameters.lr=0.02 seed=0 run_name=adam_anchored_s0
run optimizer=learnable_adam optimizer.hyperparameters.lr=0.02 seed=0 run_name=learnable_adam_s0
run optimizer=learnable_momentum optimizer.hyperparameters.lr=0.5 seed=0 run_name=learnable_momentum_s0
sleep 60; grep -h "validation" runs/meta_train/*/*/train.log | tail -14
wait
grep -h "stopp\|never\|best" runs/meta_train/*/*/train.log | tail -40
tar czf $OUT/runs_meta.tgz --exclude='*.png' runs/meta_train
ck() { f=runs/meta_train/$2/$1/checkpoints/best.pt; [ -f $f ] && echo "{path:$f,label:$3}"; }
L=""; for a in "lstm_s0 mnist lstm" "lstm_s1 mnist lstm" "lstm_s2 mnist lstm" "rnnprop_mix_s0 mnist_mixture rnnprop_mix" "rnnprop_mix_s1 mnist_mixture rnnprop_mix" "rnnprop_mix_s2 mnist_mixture rnnprop_mix" "adam_anchored_mix_s0 mnist_mixture adam_anchored_mix" "adam_anchored_mix_s1 mnist_mixture adam_anchored_mix" "adam_anchored_mix_s2 mnist_mixture adam_anchored_mix" "rnnprop_s0 mnist rnnprop" "adam_anchored_s0 mnist adam_anchored" "learnable_adam_s0 mnist learnable_adam" "learnable_momentum_s0 mnist learnable_momentum"; do x=$(ck $a) && L="$L,$x"; done
echo "checkpoints: $L"
timeout ${STUDY_S:-200} python3 train.py experiment=generalization device=$DEV logger=none progress=false eval.instances=${INST:-100} \
  "checkpoints=[${L#,}]" run_name=study 2>&1 | tail -30
tar czf $OUT/study.tgz runs/generalization
