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
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "l2l" / "pretrained"


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
        "meta_training_tasks": iteration * batch if iteration is not None and batch else None,
        "horizon": meta.get("horizon"),
        "val_loss": payload.get("val_loss"),
        "untrained_val_loss": payload.get("untrained_val_loss"),
        "l2l_version": l2l_version(),
        "date": datetime.date.today().isoformat(),
    }
    if note:
        record["note"] = note
    return record


def add_to_zoo(name: str, run_dir: Path, note: str | None = None) -> dict[str, Any]:
    """Copy ``run_dir``'s best.pt into the zoo and write its index entry (replacing one of the
    same name); returns the entry."""
    best = run_dir / "checkpoints" / "best.pt"
    if not best.is_file():
        raise SystemExit(f"{best} does not exist: is {run_dir} a finished meta-training run?")
    record = index_entry(name, run_dir, note)
    shutil.copyfile(best, ZOO / record["file"])
    index_path = ZOO / "index.json"
    data = json.loads(index_path.read_text()) if index_path.is_file() else {"entries": []}
    data["entries"] = [e for e in data["entries"] if e["name"] != name] + [record]
    index_path.write_text(json.dumps(data, indent=2) + "\n")
    return record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", help="the zoo name, e.g. lstm-quadratic")
    parser.add_argument("--from-run", type=Path, help="adopt this finished run instead")
    parser.add_argument("--note", help="a sentence kept in the entry (shown by the listing)")
    parser.add_argument("overrides", nargs="*", help="train.py overrides (after --)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))  # l2l from this checkout, installed or not
    if (args.from_run is None) == (not args.overrides):
        parser.error("give either train.py overrides (after --) or --from-run, not both")
    run_dir = args.from_run if args.from_run is not None else train(args.name, args.overrides)
    record = add_to_zoo(args.name, run_dir, args.note)
    from l2l.pretrained import describe

    print(describe(record))


if __name__ == "__main__":
    main()
