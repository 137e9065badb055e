#!/usr/bin/env bash
# A GPU batch for a session that is lent a device machine (never run yet: no machine was lent).
# The device machine has torch but not hydra and cannot reach PyPI, and ../shared does not travel:
#   pip download --no-deps -d .gpuwheels hydra-core==1.3.2 omegaconf==2.3.0 antlr4-python3-runtime==4.9.3
#   mkdir -p .gpudata && cp ../shared/data/mnist/*.gz .gpudata/
#   echo /.gpuwheels/ >> .git/info/exclude; echo /.gpudata/ >> .git/info/exclude
# then run `bash scripts/gpu_batch.sh` through the device tool with carry [".gpudata", ".gpuwheels"].
# It smoke-tests device=cuda, runs the CUDA tests and the GPU meta-training benchmark, then
# meta-trains 8 MNIST optimizers in parallel for 330 s each (SIGTERM saves them) and packs runs/.
set -x
pip install -q --no-index --no-build-isolation --find-links .gpuwheels hydra-core omegaconf antlr4-python3-runtime
export L2L_DATA_DIR=$PWD/.gpudata PYTHONPATH=$PWD PYTHONUNBUFFERED=1 WANDB_MODE=disabled OMP_NUM_THREADS=2
nvidia-smi -L; python3 -c "import torch, hydra; print(torch.__version__, torch.cuda.get_device_name(), hydra.__version__)"
python3 train.py mode=meta_train device=cuda task=mnist meta.iterations=2 meta.horizon=10 meta.unroll=5 meta.val_every=1 meta.val_instances=2 logger=none progress=false run_name=smoke 2>&1 | tail -4
python3 -m pytest -q -p no:cacheprovider tests/test_mnist_mlp.py tests/test_mnist_families.py -k cuda 2>&1 | tail -2
timeout 100 python3 benchmarks/bench_meta_training.py --device cuda --batch-sizes 1 16 128 --repeats 3 --skip-compile 2>&1 | tee $OUT/bench_meta_gpu.txt
C="experiment=paper_mnist mode=meta_train device=cuda meta.iterations=10000 meta.val_every=250 logger=none progress=false"
M="task=mnist_mixture meta.scale_range=2.0 meta.objective=log_relative"
run() { timeout -s TERM 330 python3 train.py $C "$@" > /dev/null 2>&1 & }
for s in 0 1 2; do run optimizer=lstm seed=$s run_name=lstm_s$s; done
run optimizer=rnnprop seed=0 run_name=rnnprop_s0
run optimizer=adam_anchored seed=0 run_name=adam_anchored_s0
run optimizer=learnable_adam seed=0 run_name=learnable_adam_s0
run optimizer=rnnprop seed=0 run_name=rnnprop_mix_s0 $M
run optimizer=adam_anchored seed=0 run_name=adam_anchored_mix_s0 $M
wait
grep -h "validation\|stopped\|never" runs/meta_train/*/*/train.log | tail -60
tar czf $OUT/runs_meta.tgz runs/meta_train
