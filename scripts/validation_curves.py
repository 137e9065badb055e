"""Validation curves of several meta-training runs in one figure (a line per run).

    python scripts/validation_curves.py RUN_DIR RUN_DIR ... \
        --out docs/figures/mnist_validation.png
    python scripts/validation_curves.py RUN_DIR ... --by-optimizer --out first_vs_second.png

Reads each run's ``checkpoints/latest.pt``, or a carried ``<run_name>_latest.pt`` given as a
file (its history: validation score per iteration, the same numbers as the run's ``train.log``),
and marks the kept (best) point. The point: a
study over meta-training seeds should show how each seed's training went, not only where it
ended, so the reader sees whether more tasks would have helped. ``--by-optimizer`` draws a
panel per learned optimizer, with first-order meta-gradients dashed and exact (second-order)
ones solid, read from each checkpoint's ``meta_config``: the comparison that shows whether
dropping the second derivatives is what made a run drift.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from l2l.checkpoint import load


def _draw(ax: Axes, run: Path, payload: dict[str, Any], *, untrained_line: bool = False,
          **style: Any) -> None:
    history = payload["history"]
    its, vals = history["val_iteration"], history["val_loss"]
    label = run.name.removesuffix("_latest.pt") if run.is_file() else run.name
    line, = ax.plot(its[1:], vals[1:], marker="o", ms=3, label=label, **style)  # no untrained
    best = payload.get("best_iteration")
    if best in its:
        ax.plot([best], [vals[its.index(best)]], "*", ms=12, color=line.get_color())
    untrained = payload.get("untrained_val")
    if untrained is not None and untrained_line:
        ax.axhline(untrained, color="grey", lw=0.8, ls=":")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path,
                        help="meta-training run directories, or latest.pt files carried elsewhere")
    parser.add_argument("--out", type=Path, required=True, help="the PNG to write")
    parser.add_argument("--title", default="validation final loss during meta-training")
    parser.add_argument("--by-optimizer", action="store_true",
                        help="a panel per optimizer; first-order runs dashed, second-order solid")
    args = parser.parse_args(argv)
    payloads = {run: load(run if run.is_file() else run / "checkpoints" / "latest.pt")
                for run in args.runs}
    if not args.by_optimizer:
        fig = Figure(figsize=(7, 4))
        axes = {None: fig.add_subplot()}
    else:
        names = list(dict.fromkeys(p["optimizer"]["name"] for p in payloads.values()))
        fig = Figure(figsize=(4.2 * len(names), 3.8))
        axes = {name: fig.add_subplot(1, len(names), i + 1) for i, name in enumerate(names)}
    for run, payload in payloads.items():
        if not args.by_optimizer:
            _draw(axes[None], run, payload)
            continue
        second = bool((payload.get("meta_config") or {}).get("second_order"))
        _draw(axes[payload["optimizer"]["name"]], run, payload, untrained_line=True,
              ls="-" if second else "--")
    for name, ax in axes.items():
        ax.set_xlabel("meta-training task")
        ax.set_ylabel("validation final loss (kept: *)")
        ax.set_title(args.title if name is None else
                     f"{name}: dashed first-order, solid exact\n(dotted: untrained)", fontsize=9)
        lows = [min(p["history"]["val_loss"]) for p in payloads.values()
                if name is None or p["optimizer"]["name"] == name]
        if name is not None and min(lows) > 0:  # untrained can be 10x trained: log scale
            ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig).print_png(str(args.out))
    print(args.out)


if __name__ == "__main__":
    main()
