#!/usr/bin/env bash
# Carry long meta-training runs across machines that do not keep runs/: copy each run's
# resumable checkpoints/latest.pt to docs/results/<where>/<run_name>_latest.pt, readable by all,
# and print the iteration it holds. Resume later with the run's own command plus
# resume_from=docs/results/<where>/<run_name>_latest.pt (the same run_name).
#   scripts/carry_runs.sh mnist runs/meta_train/mnist/paper_lstm_s0 runs/meta_train/mnist/paper_lstm_s1
set -euo pipefail
cd "$(dirname "$0")/.."
where=${1:?usage: scripts/carry_runs.sh WHERE RUN_DIR...}
shift
mkdir -p "docs/results/$where"
for run in "$@"; do
    name=$(basename "$run")
    source="$run/checkpoints/latest.pt"
    [ -f "$source" ] || { echo "no $source: nothing to carry for $name" >&2; exit 1; }
    target="docs/results/$where/${name}_latest.pt"
    cp "$source" "$target.tmp" && chmod 644 "$target.tmp" && mv "$target.tmp" "$target"
    iteration=$("${PYTHON:-python}" -c "import sys, torch; print(torch.load(sys.argv[1], weights_only=True)['iteration'])" "$target")
    echo "$name: iteration $iteration -> $target"
done
