"""Meta-train a learned optimizer and add it to the pretrained zoo (``l2l/pretrained/``).

    python scripts/train_zoo.py lstm-quadratic -- mode=meta_train task=quadratic optimizer=lstm \
        meta=demo run_name=zoo_lstm_quadratic threads=1 logger=none
    python scripts/train_zoo.py lstm-quadratic \
        --from-run runs/meta_train/quadratic/zoo_lstm_quadratic

The first form runs ``train.py`` with the given overrides (a ``run_name`` is added if missing,
so the run directory is known and a killed run resumes), the second adopts a finished run. Either
way the run's ``checkpoints/best.pt`` is copied to ``l2l/pretrained/<name>.pt`` and
``l2l/pretrained/index.json`` gets (or replaces) the entry ``<name>``: optimizer, task, the exact
command (from the run's ``.hydra/overrides.yaml``), seed, number of meta-training tasks, best
iteration and validation score (from ``best.pt``), l2l version and date. The point is that every
shipped optimizer says exactly how it was made.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "l2l" / "pretrained"
#: a zoo name is a plain file stem: no path separators, no "..", nothing a shell must quote
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def check_name(name: str) -> str:
    """A zoo name that stays a file inside l2l/pretrained/, else SystemExit saying why."""
    if not NAME.fullmatch(name) or ".." in name:
        raise SystemExit(f"invalid zoo name {name!r}: use letters, digits, '-', '_' and '.' "
                         "(no '/' or '..'), e.g. lstm-quadratic; the entry is written to "
                         "l2l/pretrained/<name>.pt")
    return name


def l2l_version() -> str:
    """The installed l2l version (pyproject's when l2l is run from a checkout)."""
    try:
        from importlib.metadata import version

        return version("l2l")
    except Exception:  # noqa: BLE001 - not installed: read pyproject
        import tomllib

        return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def run_dir_of(overrides: list[str]) -> Path:
    """Where ``train.py`` with these overrides writes (Hydra's own composition of run.dir)."""
    from hydra import compose, initialize_config_dir

    from l2l.config_store import register_configs

    register_configs()  # conf/optimizer/*.yaml take their defaults from the classes
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
        return ROOT / cfg.hydra.run.dir


def train(name: str, overrides: list[str]) -> Path:
    """Run ``train.py`` (meta_train) with ``overrides`` in the repository root; its run dir."""
    if not any(o.startswith("run_name=") for o in overrides):
        overrides = [*overrides, f"run_name=zoo_{name.replace('-', '_')}"]
    if not any(o.startswith("mode=") for o in overrides):
        overrides = ["mode=meta_train", *overrides]
    run_dir = run_dir_of(overrides)
    print("running: python train.py " + " ".join(overrides), flush=True)
    subprocess.run([sys.executable, str(ROOT / "train.py"), *overrides], cwd=ROOT, check=True)
    return run_dir


def index_entry(name: str, run_dir: Path, note: str | None = None) -> dict[str, Any]:
    """The index record of a finished meta-training run ``run_dir`` under the zoo name; ``note``
    says what the numbers cannot (how far short of the paper's budget, which seed of several)."""
    from l2l.checkpoint import load

    best = run_dir / "checkpoints" / "best.pt"
    payload = load(best)
    overrides = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text()) or []
    config = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text()) or {}
    task = (payload.get("identity") or {}).get("task") or {}
    meta = payload.get("meta_config") or {}
    iteration = payload.get("iteration")
    batch = meta.get("batch_size")
    record = {
        "name": name,
        "file": f"{name}.pt",
        "optimizer": payload["optimizer"].get("name", "lstm"),
        "task": task.get("name"),
        "task_config": task,
        "command": "python train.py " + " ".join(overrides),
        "seed": config.get("seed"),
        "iteration": iteration,
        "meta_batch_size": batch,
        # one unit: a task is one meta-iteration of ``problems_per_task`` problems
        "meta_training_tasks": iteration,
        "problems_per_task": batch,
        "run_tasks": meta.get("iterations"),
        "horizon": meta.get("horizon"),
        "val_loss": payload.get("val_loss"),
        "score": score_name(task),
        "untrained_val_loss": payload.get("untrained_val_loss"),
        "l2l_version": l2l_version(),
        "date": datetime.date.today().isoformat(),
    }
    if note:
        record["note"] = note
    return record


def score_name(task: dict[str, Any]) -> str:
    """What best.pt's val_loss measures (the Validator's score: a mixture's is a mean of logs)."""
    return ("validation mean ln(final loss) over the mixture's components"
            if task.get("family") == "mixture" else "validation final loss")


def add_to_zoo(name: str, run_dir: Path, note: str | None = None) -> dict[str, Any]:
    """Copy ``run_dir``'s best.pt into the zoo and write its index entry (replacing one of the
    same name); returns the entry."""
    best = run_dir / "checkpoints" / "best.pt"
    if not best.is_file():
        raise SystemExit(f"{best} does not exist: is {run_dir} a finished meta-training run?")
    check_name(name)
    record = index_entry(name, run_dir, note)
    target = ZOO / record["file"]
    shutil.copyfile(best, target)
    record["sha256"] = hashlib.sha256(target.read_bytes()).hexdigest()
    index_path = ZOO / "index.json"
    data = json.loads(index_path.read_text()) if index_path.is_file() else {"entries": []}
    data["entries"] = [e for e in data["entries"] if e.get("name") != name] + [record]
    index_path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", help="the zoo name, e.g. lstm-quadratic")
    parser.add_argument("--from-run", type=Path, help="adopt this finished run instead")
    parser.add_argument("--note", help="a sentence kept in the entry (shown by the listing)")
    parser.add_argument("overrides", nargs="*", help="train.py overrides (after --)")
    args = parser.parse_args(argv)
    check_name(args.name)  # before any training: the entry must land inside l2l/pretrained/
    sys.path.insert(0, str(ROOT))  # l2l from this checkout, installed or not
    if (args.from_run is None) == (not args.overrides):
        parser.error("give either train.py overrides (after --) or --from-run, not both")
    run_dir = args.from_run if args.from_run is not None else train(args.name, args.overrides)
    record = add_to_zoo(args.name, run_dir, args.note)
    from l2l.pretrained import describe

    print(describe(record))


if __name__ == "__main__":
    main()
