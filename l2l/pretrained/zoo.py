"""The zoo's index: the entries of ``l2l/pretrained/index.json``, their files and sha256
checks, and how each is described. Loading an entry is :func:`l2l.load_optimizer`'s job
(:func:`l2l.pretrained.load` is its documented alias for zoo names)."""

from __future__ import annotations

import builtins
import hashlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from l2l.checkpoint import CheckpointError

if TYPE_CHECKING:
    from torch import Tensor


ZOO_DIR = Path(__file__).resolve().parent
INDEX = ZOO_DIR / "index.json"
log = logging.getLogger("l2l")


def _read_index() -> dict[str, Any]:
    if not INDEX.is_file():
        return {}
    try:
        data = json.loads(INDEX.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{INDEX} is not valid JSON ({error}): restore it from the "
                              "package (git checkout l2l/pretrained/index.json)") from error
    if not isinstance(data, dict) or not isinstance(data.get("entries", []), builtins.list):
        raise CheckpointError(f"{INDEX} must be an object with an 'entries' list")
    return data


def index() -> dict[str, dict[str, Any]]:
    """The zoo's entries by name, as stored in ``index.json`` (empty if there is none). An entry
    without a ``name`` or ``file`` is a :class:`CheckpointError` naming the entry."""
    entries: dict[str, dict[str, Any]] = {}
    for position, record in enumerate(_read_index().get("entries", [])):
        label = (record.get("name") if isinstance(record, dict) else None) or f"#{position + 1}"
        if not isinstance(record, dict):
            raise CheckpointError(f"{INDEX}: entry {label} is not an object")
        for key in ("name", "file"):
            if not isinstance(record.get(key), str) or not record[key]:
                raise CheckpointError(f"{INDEX}: entry {label} has no {key!r}: every entry "
                                      "needs a 'name' and the 'file' it describes")
        if Path(record["file"]).name != record["file"]:
            raise CheckpointError(f"{INDEX}: entry {label} names file {record['file']!r}, "
                                  "which is not a plain file name in l2l/pretrained/")
        entries[record["name"]] = record
    return entries


def recommended() -> dict[str, Any] | None:
    """The index's recommended default (``{"name", "why"}``), if it states one."""
    return _read_index().get("recommended")


def names() -> tuple[str, ...]:
    """The names of the shipped entries."""
    return tuple(index())


def entry(name: str) -> dict[str, Any]:
    """One entry's index record; an unknown name is an error that lists the known ones."""
    entries = index()
    if name not in entries:
        known = ", ".join(entries) or "none"
        raise CheckpointError(f"{name!r} is neither a checkpoint file nor a pretrained "
                              f"optimizer (the zoo holds: {known})")
    return entries[name]


def path(name: str) -> Path:
    """The ``.pt`` file of the zoo entry ``name``."""
    return ZOO_DIR / entry(name)["file"]


def resolve(checkpoint: str | Path) -> Path:
    """A checkpoint argument as a file (:func:`find`). Raises :class:`CheckpointError`
    naming the zoo entries when it is none of them."""
    found = find(checkpoint)
    if found is None:
        known = ", ".join(index()) or "none"
        raise CheckpointError(f"checkpoint={checkpoint} does not exist: give a checkpoint file "
                              "(a run's checkpoints/best.pt) or a pretrained optimizer's name "
                              f"({known})")
    return found.file


def is_zoo_name(checkpoint: str | Path) -> bool:
    """Is ``checkpoint`` a zoo name rather than an existing file?"""
    return not Path(checkpoint).is_file() and str(checkpoint) in index()


def sha256(file: Path) -> str:
    return hashlib.sha256(file.read_bytes()).hexdigest()


def verify(name: str) -> Path:
    """The entry's file, after checking it against the index's sha256: a file that is not the
    one the entry describes (edited, truncated, or another entry's) is a CheckpointError."""
    record = entry(name)
    file = ZOO_DIR / record["file"]
    expected = record.get("sha256")
    if expected is not None and file.is_file() and sha256(file) != expected:
        raise CheckpointError(
            f"pretrained optimizer {name!r}: {file} does not match the sha256 in {INDEX.name} "
            f"(the file was changed or the entry points at another file); restore both from "
            "the package, or re-add the entry with scripts/train_zoo.py")
    return file


def entry_of(checkpoint: str | Path) -> dict[str, Any] | None:
    """The zoo entry a checkpoint argument is (a zoo name or a zoo file), else None."""
    try:
        found = find(checkpoint)
    except CheckpointError:
        return None
    return found.entry if found is not None else None


class Found(NamedTuple):
    """A checkpoint argument located by :func:`find`."""

    file: Path
    #: the zoo entry the file is, None for a checkpoint outside the zoo
    entry: dict[str, Any] | None
    #: that entry's one-line "trained on / suits / fails on" (:func:`suits_line`)
    summary: str | None


def find(checkpoint: str | Path) -> Found | None:
    """The file a checkpoint argument names (an existing path, a zoo name, or a path of the
    form ``l2l/pretrained/<name>.pt``), with its zoo entry, or None when it names no file. A
    zoo file is checked against its sha256 (:func:`verify`). One call gives the loader all it
    needs from the zoo."""
    given = Path(checkpoint)
    if given.is_file():
        file = given
    elif given.parent.parts[-2:] == ("l2l", "pretrained") and (ZOO_DIR / given.name).is_file():
        file = ZOO_DIR / given.name
    elif str(checkpoint) in index():
        file = path(str(checkpoint))
    else:
        return None
    record = None
    if file.resolve().parent == ZOO_DIR:
        record = next((r for r in index().values() if r["file"] == file.name), None)
        if record is not None:
            verify(record["name"])
    return Found(file, record, suits_line(record) if record is not None else None)


def suits_line(record: dict[str, Any]) -> str:
    """The one-line "suits / fails on" summary of an entry."""
    works = record.get("works_on") or "not evaluated on held-out problems"
    fails = record.get("fails_on") or "not evaluated on held-out problems"
    trained = record.get("trained_on") or record.get("task")
    return f"pretrained {record['name']}: trained on {trained}; suits: {works}; fails on: {fails}"


def warn_task(checkpoint: str | Path, task_name: str) -> bool:
    """Log a warning if ``checkpoint`` is a zoo entry documented to fail on task ``task_name``
    (its index ``fails_on_tasks``); True if it warned."""
    record = entry_of(checkpoint)
    if record is None or task_name not in (record.get("fails_on_tasks") or []):
        return False
    log.warning(f"pretrained {record['name']} is documented to fail on task={task_name}: "
                f"{record.get('fails_on')} ({record.get('evidence')})")
    return True


def warn_drop_in(name: str, params: list[Tensor]) -> bool:
    """Log a warning if zoo entry ``name`` is documented to fail as a drop-in on these
    parameters: on any module (``drop_in_warning: "any"``) or on one with convolution weights
    (4-d parameters; ``"conv"``). True if it warned."""
    record = index().get(name)
    kind = record.get("drop_in_warning") if record else None
    if kind == "any" or (kind == "conv" and any(p.dim() == 4 for p in params)):
        what = "this module" if kind == "any" else "a module with convolutions"
        log.warning(f"pretrained {name} is documented to fail on {what}: "
                    f"{record.get('fails_on')} ({record.get('evidence')})")
        return True
    return False


def score_name(record: dict[str, Any]) -> str:
    """What an entry's ``val_loss`` measures (a mixture's is a mean of log losses)."""
    if record.get("score"):
        return record["score"]
    family = (record.get("task_config") or {}).get("family")
    return ("validation mean ln(final loss) over the mixture's components" if family == "mixture"
            else "validation final loss")


def tasks_text(record: dict[str, Any]) -> str:
    """The kept checkpoint's and the run's length in one unit: tasks of N problems."""
    kept, run = record.get("meta_training_tasks"), record.get("run_tasks")
    per = record.get("problems_per_task") or record.get("meta_batch_size")
    text = f"kept at task {kept}" + (f" of a {run}-task run" if run is not None else "")
    return text + (f", {per} problem{'s' if per != 1 else ''} per task" if per else "")


def cost_text(record: dict[str, Any]) -> str | None:
    """The step cost per parameter, as measured by benchmarks/bench_dropin.py."""
    cost = record.get("cost")
    if not cost:
        return None
    parts = [f"{model} {c['ns_per_param_step']:,.{0 if c['ns_per_param_step'] >= 10 else 1}f} "
             f"ns/param ({c['x_adam']:.3g}x torch Adam)"
             for model, c in cost.items() if isinstance(c, dict)]
    first = max((c.get("first_step_s", 0) for c in cost.values() if isinstance(c, dict)),
                default=0)
    return (f"{', '.join(parts)}; first step up to {first:.2g} s ({cost.get('source')}, "
            f"{cost.get('machine')}, sgemm {cost.get('sgemm_gflops')} GFLOP/s, "
            f"{cost.get('date')})")


def describe(record: dict[str, Any]) -> str:
    """One entry as a few human-readable lines: what it is, how it was trained, what it suits
    and fails on, what a step costs."""
    score = record.get("val_loss")
    cost = cost_text(record)
    lines = [
        f"{record['name']}: {record.get('optimizer')} meta-trained on {record.get('task')} "
        f"(seed {record.get('seed')}, {tasks_text(record)}; {score_name(record)} "
        f"{score if score is None else format(score, '.4g')})",
        f"  trained on: {record.get('trained_on') or record.get('task')}",
        f"  suits:      {record.get('works_on') or 'not evaluated on held-out problems'}",
        f"  fails on:   {record.get('fails_on') or 'not evaluated on held-out problems'}",
        *([f"  evidence:   {record['evidence']}"] if record.get("evidence") else []),
        f"  cost:       {cost or 'not measured (python benchmarks/bench_dropin.py)'}",
        f"  file:       {record.get('file')} (sha256 {str(record.get('sha256'))[:12]}...)",
        f"  command:    {record.get('command')}",
        f"  l2l {record.get('l2l_version')}, {record.get('date')}",
        *([f"  note:       {record['note']}"] if record.get("note") else []),
    ]
    return "\n".join(lines)


def entries() -> list[dict[str, Any]]:
    """Every entry's index record, in index order (also printed by ``python -m l2l.pretrained``)."""
    return [*index().values()]


list = entries  # noqa: A001 - ``l2l.pretrained.list()`` is the documented name
