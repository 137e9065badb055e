"""Validation curves of several meta-training runs in one figure (a line per run).

    python scripts/validation_curves.py RUN_DIR RUN_DIR ... \
        --out docs/figures/mnist_validation.png

Reads each run's ``checkpoints/latest.pt`` (its history: validation score per iteration, the
same numbers as the run's ``train.log``) and marks the kept (best) point. The point: a
study over meta-training seeds should show how each seed's training went, not only where it
ended, so the reader sees whether more tasks would have helped.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from l2l.checkpoint import load


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="meta-training run directories")
    parser.add_argument("--out", type=Path, required=True, help="the PNG to write")
    parser.add_argument("--title", default="validation final loss during meta-training")
    args = parser.parse_args(argv)
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    for run in args.runs:
        payload = load(run / "checkpoints" / "latest.pt")
        history = payload["history"]
        its, vals = history["val_iteration"], history["val_loss"]
        line, = ax.plot(its[1:], vals[1:], marker="o", ms=3, label=run.name)  # skip untrained
        best = payload.get("best_iteration")
        if best in its:
            ax.plot([best], [vals[its.index(best)]], "*", ms=12, color=line.get_color())
    ax.set_xlabel("meta-training task")
    ax.set_ylabel("validation final loss (kept: *)")
    ax.set_title(args.title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig).print_png(str(args.out))
    print(args.out)


if __name__ == "__main__":
    main()
