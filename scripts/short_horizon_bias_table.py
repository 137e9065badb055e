"""The short-horizon-bias experiment's table (issue 23), from what scripts/short_horizon_bias.sh
leaves in ``runs/``: per meta-training seed and estimator, the untrained start's and the best
validation final loss (with the iteration it was kept at), the last validation (where
meta-training had taken the weights), the learned rule (learnable_momentum: lr and momentum;
learnable_adam: lr, betas and eps), and the mean final test loss
over the 100 test problems with its 95% CI (PES: its best checkpoint; TBPTT: its last weights,
its best being the untrained start); then the tuned baseline's and the untrained start's test
loss at the same 1,000 steps.

    python scripts/short_horizon_bias_table.py [--runs runs] [--prefix shb] > table.md

A seed whose best checkpoint is its untrained start says so: meta-training never improved on
it, the short-horizon bias the experiment looks for.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from l2l.checkpoint import load
from l2l.loading import load_optimizer


def _record(summary: Path) -> dict:
    """The first (the only) optimizer's record of an evaluation's summary.json."""
    return json.loads(summary.read_text())["optimizers"][0]


def _rule(path: Path) -> str:
    """The learned lr (with a polynomial schedule: at the start -> at its horizon) and the
    rest of a checkpoint's rule: learnable_momentum's momentum, learnable_adam's betas and eps."""
    optimizer, _ = load_optimizer(str(path), "cpu")
    with torch.no_grad():
        lr = f"{float(optimizer.learning_rate(torch.zeros(1, 1))):.3g}"
        if optimizer.config.get("schedule_degree"):  # validated: it comes with its horizon
            end = torch.full((1, 1), float(optimizer.config["schedule_horizon"]))
            lr += f"→{float(optimizer.learning_rate(end)):.3g}"
        values = optimizer._float_values()
    rest = ", ".join(f"{name} " + (", ".join(f"{v:.4g}" for v in value)
                                   if isinstance(value, tuple) else f"{value:.3g}")
                     for name, value in values.items())
    return f"lr {lr}, {rest}"


def _test(record: dict) -> str:
    return f"{record['final_loss_mean']:.4g} ± {record['final_loss_ci95']:.2g}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=Path("runs"))
    parser.add_argument("--prefix", default="shb", help="the script's PREFIX")
    args = parser.parse_args(argv)
    meta = args.runs / "meta_train" / "mnist"
    print("| seed | estimator | untrained validation | best validation (iteration) | last "
          "validation | learned rule: best / last | test final loss (PES: best; TBPTT: last) |")
    print("|---|---|---|---|---|---|---|")
    for run in sorted(meta.glob(f"{args.prefix}_*_s*")):
        how, seed = run.name.removeprefix(f"{args.prefix}_").rsplit("_s", 1)
        latest = load(run / "checkpoints" / "latest.pt")
        history = latest["history"]
        vals, its = history["val_loss"], history["val_iteration"]
        best = latest.get("best_iteration", its[vals.index(min(vals))])
        kept = "untrained" if best == 0 else f"{min(vals):.4g} ({best})"
        evaluated = f"{args.prefix}_eval_" + ("pes" if how == "pes" else "tbptt_last")
        summaries = sorted(args.runs.glob(f"evaluate/**/{evaluated}_s{seed}/summary.json"))
        test = _test(_record(summaries[-1])) if summaries else "not run"
        checkpoints = run / "checkpoints"
        rules = f"{_rule(checkpoints / 'best.pt')} / {_rule(checkpoints / 'latest.pt')}"
        print(f"| {seed} | {how} | {vals[0]:.4g} | {kept} | {vals[-1]:.4g} | {rules} | {test} |")
    for pattern, what in ((f"{args.prefix}_*_tuned", "the tuned baseline"),
                          (f"{args.prefix}_eval_untrained", "the untrained start")):
        found = sorted(args.runs.glob(f"**/{pattern}/summary.json"))
        if found:
            record = _record(found[-1])
            lr = f" (lr {record['tuned_lr']:.3g})" if record.get("tuned_lr") else ""
            name = f" ({record['name']})" if record.get("name") else ""
            print(f"\n{what}{name}{lr}: test final loss {_test(record)}.")


if __name__ == "__main__":
    main()
