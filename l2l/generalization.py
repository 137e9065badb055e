"""The generalization study in one command (``mode=generalization``).

    python train.py experiment=generalization checkpoints=[a.pt,b.pt,lstm-quadratic]

A learned optimizer is only interesting if it works beyond the problems it was meta-trained on,
and that claim is only fair against baselines tuned for each problem. So every checkpoint (a
path or a :mod:`l2l.pretrained` zoo name) is evaluated on the base task and on each held-out
*variant* (``generalization.variants``: a ``conf/task`` preset plus optional ``eval_steps`` and
task ``kwargs`` overrides), and every baseline of ``eval.baselines`` has its learning rate tuned
on validation problems *of that variant* (:func:`l2l.experiments.tune_and_evaluate`).

Meta-training seeds are an axis of the study: checkpoints of the same optimizer (same name, or
the same ``label`` given as ``{path: ..., label: ...}``) from different ``seed=`` runs are one
group, and each variant reports the mean over seeds of their final losses with a Student-t 95%
CI across seeds, plus the worst seed. With a single checkpoint the CI is across test instances.
All learned optimizers and baselines meet the same test problems (``eval.seed``).

Writes ``generalization.md``, ``generalization.json`` and ``generalization.png`` (a panel per
variant: mean loss curves with CI bands, log-scale y, as in the paper's generalization figure).
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from l2l import experiments
from l2l.atomic import save_figure, write_text
from l2l.checkpoint import load
from l2l.config_checks import SIZE_LIMITS
from l2l.evaluation import EvaluationRecord
from l2l.learned.base import LearnedOptimizer
from l2l.progress import Progress
from l2l.report import DASH, _finite, dumps, fmt, verdict_text
from l2l.stats import mean_ci95, separated_winner
from l2l.tasks import build_task
from l2l.tasks.base import TaskFamily
from l2l.tracking import RunLogger

log = logging.getLogger("l2l")

#: the task keys that say where data lives, not what the task is


# ---- what the study runs on --------------------------------------------------------------------


@dataclass
class Variant:
    """One column of the paper's generalization figure: a task preset (``conf/task/<task>.yaml``;
    ``None``: the run's own ``task=``), optionally run for ``eval_steps`` steps and with some of
    the task's ``kwargs`` changed."""

    name: str
    task: str | None = None
    eval_steps: int | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class Checkpoint:
    """One learned optimizer to study: where it came from and what it knows of its training."""

    spec: str  #: as given (a path or a zoo name)
    path: Path
    group: str  #: the label given, else the optimizer's name
    optimizer: LearnedOptimizer
    seed: int | None  #: its meta-training seed, if the checkpoint records it
    trained_on: dict[str, Any] | None  #: the task identity stored in the checkpoint, if any
    horizon: int | None  #: the meta-training horizon (steps per task), if recorded
    iteration: int | None

    def describe(self) -> dict[str, Any]:
        return {"spec": self.spec, "path": str(self.path), "group": self.group,
                "optimizer": self.optimizer.name, "seed": self.seed,
                "trained_on": self.trained_on, "horizon": self.horizon,
                "iteration": self.iteration}


@dataclass
class Study:
    """Everything the study needs, checked before any work starts (:func:`prepare`)."""

    variants: list[tuple[Variant, DictConfig, TaskFamily]]
    checkpoints: list[Checkpoint]

    @property
    def groups(self) -> dict[str, list[Checkpoint]]:
        out: dict[str, list[Checkpoint]] = {}
        for checkpoint in self.checkpoints:
            out.setdefault(checkpoint.group, []).append(checkpoint)
        return out


def _plain(node: Any) -> Any:
    """A config node (mapping or list) as plain Python containers."""
    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=True)
    return node


def conf_dir() -> Path:
    """The config folder the running app was composed from (``conf/`` beside train.py)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        for source in HydraConfig.get().runtime.config_sources:
            if source.provider == "main" and source.schema == "file":
                return Path(source.path)
    except Exception:  # noqa: BLE001 - no Hydra app running (a notebook, a test)
        pass
    return Path(__file__).resolve().parents[1] / "conf"


def task_preset(name: str, conf: Path | None = None) -> DictConfig:
    """The task preset ``conf/task/<name>.yaml`` with its ``defaults`` (parent presets) merged
    in, as Hydra would compose it: presets stay defined only in ``conf/task``."""
    folder = (conf or conf_dir()) / "task"
    path = folder / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in folder.glob("*.yaml")))
        raise ValueError(f"generalization variant task {name!r} is not a task preset "
                         f"(conf/task holds: {known})")
    node = OmegaConf.load(path)
    parents = node.pop("defaults", [])
    merged = OmegaConf.create()
    for parent in parents:
        if str(parent) == "_self_":
            continue
        merged = OmegaConf.merge(merged, task_preset(str(parent), conf))
    return OmegaConf.merge(merged, node)


def parse_variants(cfg: DictConfig) -> list[Variant]:
    """``generalization.variants`` (plus the base task first when ``generalization.base``)."""
    settings = OmegaConf.select(cfg, "generalization") or {}
    variants = [Variant("base")] if settings.get("base", True) else []
    allowed = {"name", "task", "eval_steps", "kwargs"}
    for raw in _plain(settings.get("variants") or []):
        if not isinstance(raw, dict) or "name" not in raw:
            raise ValueError(f"a generalization variant must be a mapping with a name (and task, "
                             f"eval_steps, kwargs), got {raw!r}")
        unknown = set(raw) - allowed
        if unknown:
            raise ValueError(f"generalization variant {raw['name']!r} has unknown keys "
                             f"{sorted(unknown)} (allowed: {sorted(allowed)})")
        variants.append(Variant(str(raw["name"]), raw.get("task"), raw.get("eval_steps"),
                                dict(raw.get("kwargs") or {})))
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise ValueError(f"generalization variants need distinct names, got {names}")
    if not variants:
        raise ValueError("the generalization study has no variants: set generalization.base=true "
                         "or list generalization.variants")
    return variants


def variant_config(cfg: DictConfig, variant: Variant) -> DictConfig:
    """The run's config with the variant's task and horizon: what tuning and evaluation of the
    variant read (``tune.steps`` follows ``eval.steps`` unless it was set)."""
    vcfg = copy.deepcopy(cfg)
    OmegaConf.set_struct(vcfg, False)  # a variant may add task kwargs the preset lacks
    if variant.task is not None:
        OmegaConf.update(vcfg, "task", task_preset(variant.task), merge=False)
    if variant.kwargs:
        OmegaConf.update(vcfg, "task.kwargs", variant.kwargs, merge=True)
    if variant.eval_steps is not None:
        steps = variant.eval_steps
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"variant {variant.name}: eval_steps must be a positive integer, "
                             f"got {steps!r}")
        if steps > SIZE_LIMITS["eval.steps"]:
            raise ValueError(f"variant {variant.name}: eval_steps={steps} is above the limit of "
                             f"eval.steps ({SIZE_LIMITS['eval.steps']:,}): lower it")
        vcfg.eval.steps = steps
    return vcfg


def checkpoint_specs(cfg: DictConfig) -> list[tuple[str, str | None]]:
    """``checkpoints=`` as ``(path or zoo name, label or None)`` pairs: entries are strings or
    ``{path: ..., label: ...}`` mappings (a label groups checkpoints other than by name)."""
    raw = OmegaConf.select(cfg, "checkpoints")
    if raw is None or (isinstance(raw, (list, ListConfig)) and len(raw) == 0):
        raise ValueError("mode=generalization needs checkpoints=[<best.pt or zoo name>, ...] "
                         "(several seeds of one optimizer are aggregated)")
    items = _plain(raw)
    if isinstance(items, str):
        items = [items]
    specs = []
    for item in items:
        if isinstance(item, dict):
            if "path" not in item:
                raise ValueError(f"a checkpoints= mapping needs a path, got {item!r}")
            specs.append((str(item["path"]), None if item.get("label") is None
                          else str(item["label"])))
        else:
            specs.append((str(item), None))
    return specs


def read_checkpoint(spec: str, label: str | None, device: torch.device) -> Checkpoint:
    """Load a checkpoint (path or zoo name) with what it records of its meta-training."""
    from l2l.pretrained import resolve

    path = resolve(spec)
    learned = experiments.load_checkpoint(spec, device)
    payload = load(path)
    identity = payload.get("identity") or {}
    meta = payload.get("meta_config") or {}
    return Checkpoint(spec=spec, path=path, group=label or learned.name, optimizer=learned,
                      seed=meta.get("seed"), trained_on=identity.get("task"),
                      horizon=meta.get("horizon"), iteration=learned.meta_trained_iterations)


def refuse_duplicates(specs: Sequence[str]) -> None:
    """Raise if two entries of ``checkpoints=`` are the same file by content (sha256), however
    they are named (a zoo name and its path, a copy): a duplicate would count as another seed
    and narrow the confidence interval without any new evidence."""
    from l2l.pretrained import resolve

    by_hash: dict[str, list[str]] = {}
    for spec in specs:
        digest = hashlib.sha256()
        with open(resolve(spec), "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        by_hash.setdefault(digest.hexdigest(), []).append(spec)
    same = [names for names in by_hash.values() if len(names) > 1]
    if same:
        shown = "; ".join(", ".join(names) for names in same)
        raise ValueError(f"checkpoints= lists the same checkpoint more than once (identical "
                         f"content: {shown}); list each meta-training seed's checkpoint once, "
                         "a duplicate would count as another seed")


def prepare(cfg: DictConfig, device: torch.device) -> Study:
    """Check the whole study before any work (every checkpoint loads, every variant's task
    builds and has its data), so that a typo fails in a second, not after hours of tuning."""
    specs = checkpoint_specs(cfg)
    refuse_duplicates([spec for spec, _ in specs])
    checkpoints = [read_checkpoint(spec, label, device) for spec, label in specs]
    variants = []
    for variant in parse_variants(cfg):
        vcfg = variant_config(cfg, variant)
        task = build_task(vcfg.task.family, **experiments.plain(vcfg.task.kwargs))
        task.name = vcfg.task.name
        experiments.check_task_data(task, device)
        variants.append((variant, vcfg, task))
    return Study(variants, checkpoints)


# ---- running it --------------------------------------------------------------------------------


class _Prefixed:
    """A run logger whose tuning records and summary keys carry the variant's name, so that the
    same baseline tuned on several variants does not overwrite itself."""

    def __init__(self, logger: RunLogger, prefix: str) -> None:
        self._logger, self._prefix = logger, prefix

    def log_tuning(self, name: str, tuning: Mapping[str, Any]) -> None:
        self._logger.log_tuning(f"{self._prefix}/{name}", tuning)

    def summary(self, values: Mapping[str, Any]) -> None:
        self._logger.summary({f"{self._prefix}/{k}": v for k, v in values.items()})

    def __getattr__(self, name: str) -> Any:
        return getattr(self._logger, name)


def run_study(cfg: DictConfig, study: Study, device: torch.device, run_dir: Path,
              logger: RunLogger) -> dict[str, Any]:
    """Tune every baseline and evaluate every checkpoint on every variant; write the table,
    the JSON and the figure into ``run_dir``; return the JSON's content."""
    results: dict[str, dict[str, Any]] = {}
    with Progress(len(study.variants), "variants", enabled=cfg.progress) as bar:
        for variant, vcfg, task in study.variants:
            log.info("variant %s: task %s, %d steps", variant.name, vcfg.task.name,
                     vcfg.eval.steps)
            prefixed = _Prefixed(logger, f"generalization/{variant.name}")
            baselines = [experiments.tune_and_evaluate(vcfg, name, task, device, prefixed)
                         for name in cfg.eval.baselines]
            learned = [experiments.evaluate(vcfg, c.optimizer, task, device,
                                            name=_checkpoint_name(c, i), tuned_lr=None)
                       for i, c in enumerate(study.checkpoints)]
            results[variant.name] = {"variant": variant, "cfg": vcfg, "baselines": baselines,
                                     "learned": learned}
            bar.update(1)
    result = summarize_study(cfg, study, results)
    write_outputs(run_dir, result)
    for row in result["rows"]:
        logger.summary({f"generalization/{row['variant']}/{row['group']}/final_loss":
                        row["learned_mean"],
                        f"generalization/{row['variant']}/{row['group']}/ratio": row["ratio"]})
    print(f"\n{markdown_tables(result)}\nstudy: {run_dir / 'generalization.md'}", flush=True)
    return result


def _checkpoint_name(checkpoint: Checkpoint, index: int) -> str:
    seed = f"seed {checkpoint.seed}" if checkpoint.seed is not None else f"#{index}"
    return f"{checkpoint.group} ({seed})"


def in_mixture(trained_on: Mapping[str, Any], target: Mapping[str, Any]) -> bool:
    """Whether a ``family: mixture`` training task has ``target`` (a task identity) among its
    components: same family, and every kwarg the component sets equal to the target's."""
    if trained_on.get("family") != "mixture":
        return False
    for component in (trained_on.get("kwargs") or {}).get("components") or []:
        ident = experiments.task_identity(component)
        if ident["family"] == target["family"] and all(
                target["kwargs"].get(k) == v for k, v in ident["kwargs"].items()):
            return True
    return False


def seen_in_training(checkpoints: Sequence[Checkpoint], vcfg: DictConfig) -> str:
    """Did the learned optimizer meet this variant's task in meta-training? ``yes`` (same task
    and horizon), ``task only`` (same task, other horizon), ``component of the mixture`` (it
    was one of the tasks of a mixture), ``no``, or ``unknown`` (the checkpoint does not record
    its task)."""
    answers = set()
    target = experiments.task_identity(experiments.plain(vcfg.task))
    for checkpoint in checkpoints:
        if checkpoint.trained_on is None:
            answers.add("unknown")
        elif experiments.task_identity(checkpoint.trained_on) != target:
            answers.add("component of the mixture" if in_mixture(checkpoint.trained_on, target)
                        else "no")
        elif checkpoint.horizon is not None and checkpoint.horizon != vcfg.eval.steps:
            answers.add(f"task only ({checkpoint.horizon} steps)")
        else:
            answers.add("yes")
    return " / ".join(sorted(answers))


def winner(learned: tuple[float, float], baseline: tuple[float, float], name: str) -> str:
    """Who has the lower final loss with separated 95% intervals: ``learned``, the baseline's
    name, or ``overlap`` (including when an interval is unknown)."""
    (lm, lc), (bm, bc) = learned, baseline
    if _finite(lm) is None or _finite(bm) is None:
        return DASH
    if _finite(lc) is None or _finite(bc) is None:
        return "overlap (no CI)"
    found, _ = separated_winner([("learned", lm, lc), (name, bm, bc)])
    return found or "overlap"


def _seed_curves(records: Sequence[EvaluationRecord]) -> tuple[list[float], list[float]]:
    """Mean over seeds of the per-seed mean curves, with the across-seed CI per step (one seed:
    its own across-instance CI)."""
    if len(records) == 1:
        return list(records[0].mean_curve), list(records[0].ci_curve)
    length = min(len(r.mean_curve) for r in records)
    mean, ci = [], []
    for t in range(length):
        m, c = mean_ci95([r.mean_curve[t] for r in records])
        mean.append(m)
        ci.append(c)
    return mean, ci


def summarize_study(cfg: DictConfig, study: Study, results: Mapping[str, Mapping[str, Any]],
                    ) -> dict[str, Any]:
    """The combined table's rows (one per variant and learned group) and everything behind
    them: per-seed losses, every baseline's record, the curves for the figure."""
    groups = study.groups
    group_index = {c.group: [i for i, d in enumerate(study.checkpoints) if d.group == c.group]
                   for c in study.checkpoints}
    rows, variants = [], []
    for name, result in results.items():
        variant, vcfg = result["variant"], result["cfg"]
        baselines: list[EvaluationRecord] = result["baselines"]
        ok = [b for b in baselines if _finite(b.final_loss_mean) is not None]
        best = min(ok, key=lambda b: b.final_loss_mean) if ok else None
        ok_log = [b for b in baselines if _finite(b.final_log10_loss_mean) is not None]
        best_log = min(ok_log, key=lambda b: b.final_log10_loss_mean) if ok_log else None
        variants.append({"name": name, "task": vcfg.task.name, "preset": variant.task,
                         "kwargs": variant.kwargs, "steps": vcfg.eval.steps,
                         "baselines": [b.as_dict() for b in baselines],
                         "learned": [r.as_dict() for r in result["learned"]]})
        for group, members in groups.items():
            records = [result["learned"][i] for i in group_index[group]]
            finals = [r.final_loss_mean for r in records]
            if len(records) == 1:
                mean, ci, over = records[0].final_loss_mean, records[0].final_loss_ci95, \
                    "instances"
                log_mean, log_ci = (records[0].final_log10_loss_mean,
                                    records[0].final_log10_loss_ci95)
            else:
                mean, ci = mean_ci95(finals)
                log_mean, log_ci = mean_ci95([r.final_log10_loss_mean for r in records])
                over = "seeds"
            finite = [(f, c) for f, c in zip(finals, members) if _finite(f) is not None]
            worst = max(finite, key=lambda fc: fc[0]) if finite else None
            if len(finite) < len(finals):  # a seed without any finite loss is the worst
                worst = next((f, c) for f, c in zip(finals, members) if _finite(f) is None)
            curve, ci_curve = _seed_curves(records)
            best_pair = (best.final_loss_mean, best.final_loss_ci95) if best else (math.nan,
                                                                                   math.nan)
            rows.append({
                "variant": name, "task": vcfg.task.name, "steps": vcfg.eval.steps,
                "group": group, "optimizer": members[0].optimizer.name,
                "seen_in_training": seen_in_training(members, vcfg),
                "learned_mean": mean, "learned_ci95": ci, "ci_over": over,
                "n_seeds": len(records),
                "per_seed": [{"seed": c.seed, "checkpoint": c.spec, "final_loss": f,
                              "diverged": r.diverged}
                             for f, c, r in zip(finals, members, records)],
                "worst_seed": None if worst is None else {"seed": worst[1].seed,
                                                          "checkpoint": worst[1].spec,
                                                          "final_loss": worst[0]},
                "diverged": sum(r.diverged for r in records),
                "best_baseline": best.name if best else None,
                "best_baseline_lr": best.tuned_lr if best else None,
                "best_baseline_mean": best_pair[0], "best_baseline_ci95": best_pair[1],
                "ratio": mean / best_pair[0] if _finite(mean) is not None and best
                and best_pair[0] > 0 else math.nan,
                "winner": winner((mean, ci), best_pair, best.name if best else DASH),
                "learned_log10_mean": log_mean, "learned_log10_ci95": log_ci,
                "best_log10_baseline": best_log.name if best_log else None,
                "best_log10_mean": best_log.final_log10_loss_mean if best_log else math.nan,
                "best_log10_ci95": best_log.final_log10_loss_ci95 if best_log else math.nan,
                "winner_log10": winner(
                    (log_mean, log_ci),
                    (best_log.final_log10_loss_mean, best_log.final_log10_loss_ci95)
                    if best_log else (math.nan, math.nan), best_log.name if best_log else DASH),
                "mean_curve": curve, "ci_curve": ci_curve,
            })
    trained_on = {group: _trained_on_text(members) for group, members in groups.items()}
    return {"title": f"Generalization study ({cfg.task.name} base)",
            "base_task": cfg.task.name, "eval_seed": cfg.eval.seed,
            "instances": cfg.eval.instances, "baselines": list(cfg.eval.baselines),
            "groups": {group: {"trained_on": trained_on[group],
                               "checkpoints": [c.describe() for c in members]}
                       for group, members in groups.items()},
            "variants": variants, "rows": rows}


def _trained_on_text(members: Sequence[Checkpoint]) -> str:
    """What the checkpoints of a group were meta-trained on, as a phrase (``unknown`` when a
    checkpoint does not record it)."""
    seen = []
    for checkpoint in members:
        task = checkpoint.trained_on
        if task is None:
            text = "unknown"
        else:
            kwargs = dict(task.get("kwargs") or {})
            if task.get("family") == "mixture":  # name the components, not their configs
                names = [str(c.get("name")) for c in kwargs.get("components") or []]
                text = f"{task.get('name')} (a mixture of {', '.join(names)})"
            else:
                listed = ", ".join(f"{k}={v}" for k, v in kwargs.items())
                text = f"{task.get('name')} ({task.get('family')}: {listed})"
            if checkpoint.horizon is not None:
                text += f", {checkpoint.horizon}-step horizon"
        if text not in seen:
            seen.append(text)
    return "; ".join(seen)


# ---- outputs -----------------------------------------------------------------------------------


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|")


def _pm(mean: Any, ci: Any) -> str:
    if _finite(mean) is None:
        return DASH
    return fmt(mean) + ("" if _finite(ci) is None else f" ± {fmt(ci, 2)}")


def markdown_tables(result: Mapping[str, Any]) -> str:
    """One table per learned group: a row per variant (what the console and the .md show)."""
    out = []
    for group, info in result["groups"].items():
        rows = [r for r in result["rows"] if r["group"] == group]
        seeds = rows[0]["n_seeds"] if rows else 0
        out.append(f"### {group}: {seeds} checkpoint(s), meta-trained on {info['trained_on']}\n")
        ci_head = "mean ± 95% CI over seeds" if seeds > 1 else "± 95% CI over test instances"
        out.append(f"| variant | task | steps | seen in training | learned final loss "
                   f"({ci_head}) | worst seed | best tuned baseline (lr) | its final loss | "
                   "learned / best | winner | winner (log10) |")
        out.append("|---|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            worst = r["worst_seed"]
            worst_text = DASH if worst is None or seeds < 2 else \
                f"{fmt(worst['final_loss'])} (seed {worst['seed']})"
            base = DASH if r["best_baseline"] is None else \
                f"{r['best_baseline']} ({fmt(r['best_baseline_lr'], 3)})"
            diverged = f" ({r['diverged']} diverged)" if r["diverged"] else ""
            out.append(f"| {_cell(r['variant'])} | {_cell(r['task'])} | {r['steps']} | "
                       f"{_cell(r['seen_in_training'])} | "
                       f"{_pm(r['learned_mean'], r['learned_ci95'])}{diverged} | {worst_text} | "
                       f"{_cell(base)} | {_pm(r['best_baseline_mean'], r['best_baseline_ci95'])}"
                       f" | {fmt(r['ratio'], 3)} | {_cell(r['winner'])} | "
                       f"{_cell(r.get('winner_log10', DASH))} |")
        out += ["", study_verdict(rows), ""]
    return "\n".join(out)


def study_verdict(rows: Sequence[Mapping[str, Any]]) -> str:
    """The one-line verdict of a group's table: per variant, the learned optimizer against the
    best tuned baseline (:func:`l2l.report.verdict_text`), on the mean final loss and on the
    mean log10 final loss."""
    def one(r: Mapping[str, Any], log: bool) -> str:
        if log:
            base = r.get("best_log10_baseline") or DASH
            pairs = [("learned", r.get("learned_log10_mean"), r.get("learned_log10_ci95")),
                     (base, r.get("best_log10_mean"), r.get("best_log10_ci95"))]
            found = r.get("winner_log10", DASH)
        else:
            pairs = [("learned", r["learned_mean"], r["learned_ci95"]),
                     (r["best_baseline"] or DASH, r["best_baseline_mean"],
                      r["best_baseline_ci95"])]
            found = r["winner"]
        text = (f"{found} wins" if found not in ("overlap", "overlap (no CI)", DASH)
                else verdict_text(pairs) if found != DASH else "no result")
        return f"{r['variant']} {text}"

    loss = "; ".join(one(r, False) for r in rows)
    log = "; ".join(one(r, True) for r in rows)
    return (f"**Verdict** (learned vs the best tuned baseline, separated 95% intervals) — "
            f"mean final loss: {loss}. Mean log10 final loss: {log}.")


def summary_matrix(result: Mapping[str, Any]) -> str:
    """Every learned group side by side: a row per variant, a column per group, then the best
    tuned baseline. A winner with separated intervals is marked (learned **bold** ✓, baseline
    ✗), so several optimizers can be compared at a glance; the per-group tables say the rest."""
    groups = list(result["groups"])
    by_variant: dict[str, dict[str, Mapping[str, Any]]] = {}
    for r in result["rows"]:
        by_variant.setdefault(r["variant"], {})[r["group"]] = r
    lines = ["| variant | " + " | ".join(_cell(g) for g in groups) + " | best tuned baseline |",
             "|---|" + "---|" * (len(groups) + 1)]
    for variant, rows in by_variant.items():
        cells = []
        for group in groups:
            r = rows.get(group)
            text = DASH if r is None else _pm(r["learned_mean"], r["learned_ci95"])
            if r is not None and r["winner"] == "learned":
                text = f"**{text}** ✓"
            elif r is not None and r["best_baseline"] and r["winner"] == r["best_baseline"]:
                text = f"{text} ✗"
            cells.append(text)
        first = next(iter(rows.values()))
        base = DASH if first["best_baseline"] is None else (
            f"{first['best_baseline']} "
            f"{_pm(first['best_baseline_mean'], first['best_baseline_ci95'])} "
            f"(lr {fmt(first['best_baseline_lr'], 3)})")
        lines.append(f"| {_cell(variant)} | " + " | ".join(cells) + f" | {_cell(base)} |")
    return "\n".join(lines) + "\n"


def markdown(result: Mapping[str, Any]) -> str:
    """generalization.md: the combined table, how to read it, and every tuned baseline."""
    lines = [f"# {result['title']}", "",
             f"Test problems: {result['instances']} instances per variant (eval.seed="
             f"{result['eval_seed']}), the same for every optimizer. Baselines "
             f"({', '.join(result['baselines'])}) have their learning rate tuned on validation "
             "problems of each variant.", "", "## Learned optimizers", ""]
    for group, info in result["groups"].items():
        lines.append(f"- **{group}** — meta-trained on: {info['trained_on']}")
        for c in info["checkpoints"]:
            lines.append(f"  - `{c['spec']}` (seed {c['seed'] if c['seed'] is not None else '?'}"
                         f", best iteration {c['iteration'] if c['iteration'] is not None else '?'}"
                         ")")
    if len(result["groups"]) > 1:
        lines += ["", "## All learned optimizers side by side", "",
                  "Final test loss (mean ± 95% CI, over seeds where there are several).", "",
                  summary_matrix(result)]
    lines += ["", "## Final test loss per variant", "", markdown_tables(result),
              "Learned final loss: with several checkpoints (meta-training seeds), the mean over "
              "seeds of each seed's mean final loss, with a Student-t 95% CI across seeds; with "
              "one, the mean over test instances and its 95% CI. *Winner*: the lower final loss "
              "when the two 95% intervals do not overlap, else `overlap`. *Seen in training*: "
              "whether the variant's task is the one the checkpoints were meta-trained on.", "",
              "![generalization](generalization.png)", "", "## Every tuned baseline", ""]
    names = result["baselines"]
    lines.append("| variant | " + " | ".join(names) + " |")
    lines.append("|---|" + "---|" * len(names))
    for variant in result["variants"]:
        cells = []
        for entry in variant["baselines"]:
            text = _pm(entry["final_loss_mean"], entry["final_loss_ci95"])
            if entry.get("tuned_lr") is not None:
                text += f" (lr {fmt(entry['tuned_lr'], 3)})"
            elif entry.get("status") != "ok":
                text = _cell(entry.get("status"))
            cells.append(text)
        lines.append(f"| {_cell(variant['name'])} | " + " | ".join(cells) + " |")
    notes = [f"{v['name']}/{e['name']}: {n}" for v in result["variants"] for e in v["baselines"]
             for n in e.get("notes", [])]
    if notes:
        lines += ["", "Notes:", "", *[f"- {_cell(n)}" for n in notes]]
    return "\n".join(lines) + "\n"


def plot(path: str | Path, result: Mapping[str, Any], dpi: int = 110) -> Path:
    """generalization.png: a panel per variant, mean loss vs step with 95% CI bands for each
    learned group (dark, thick) and every tuned baseline, log-scale y."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    from l2l.report import _palette

    def array(values: Any) -> np.ndarray:
        return np.array([np.nan if _finite(v) is None else float(v) for v in values or []])

    variants = result["variants"]
    cols = min(3, len(variants))
    rows_n = math.ceil(len(variants) / cols)
    fig = Figure(figsize=(4.6 * cols, 3.6 * rows_n))
    FigureCanvasAgg(fig)
    palette = _palette()
    colours = {name: next(palette) for name in result["baselines"]}
    learned_colours = ["black", "tab:red", "tab:purple", "tab:brown"]
    groups = list(result["groups"])
    for k, variant in enumerate(variants):
        ax = fig.add_subplot(rows_n, cols, k + 1)
        curves = [(e["name"], colours.get(e["name"], "grey"), 1.2, e["mean_curve"],
                   e["ci_curve"]) for e in variant["baselines"]]
        for g, group in enumerate(groups):
            row = next(r for r in result["rows"] if r["variant"] == variant["name"]
                       and r["group"] == group)
            curves.append((f"{group} (learned)", learned_colours[g % len(learned_colours)], 2.4,
                           row["mean_curve"], row["ci_curve"]))
        finite = np.concatenate([array(c[3])[np.isfinite(array(c[3]))] for c in curves]
                                or [np.empty(0)])
        log_scale = finite.size > 0 and bool((finite > 0).all())
        floor = float(finite.min()) * 1e-2 if log_scale else None
        for label, colour, width, mean_values, ci_values in curves:
            mean, ci = array(mean_values), array(ci_values)
            steps = np.arange(mean.size)
            ax.plot(steps, mean, color=colour, lw=width, label=label)
            if ci.size == mean.size and np.isfinite(ci).any():
                low = mean - ci if floor is None else np.maximum(mean - ci, floor)
                ax.fill_between(steps, low, mean + ci, color=colour, alpha=0.13, lw=0)
        if log_scale:
            ax.set_yscale("log")
        ax.set_title(f"{variant['name']} ({variant['task']}, {variant['steps']} steps)",
                     fontsize="medium")
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if k % cols == 0:
            ax.set_ylabel("loss" + (" (log scale)" if log_scale else ""))
        ax.grid(True, alpha=0.3)
        if k == 0:
            ax.legend(fontsize="x-small", framealpha=0.9)
    fig.suptitle(result["title"] + ": mean loss, 95% CI bands")
    fig.tight_layout()
    path = Path(path)
    save_figure(fig, path, dpi)
    return path


def write_outputs(run_dir: str | Path, result: Mapping[str, Any]) -> dict[str, Path]:
    """Write generalization.json, generalization.md and generalization.png into ``run_dir``.
    A figure that fails to draw is a warning: the numbers matter more than the picture."""
    run_dir = Path(run_dir)
    paths = {"json": run_dir / "generalization.json", "md": run_dir / "generalization.md",
             "png": run_dir / "generalization.png"}
    write_text(paths["md"], markdown(result))
    try:
        plot(paths["png"], result)
    except Exception as error:  # never lose a finished study to matplotlib
        log.warning("could not draw generalization.png: %s", error)
    # last: a generalization.json means a complete result (refuse_existing_results)
    write_text(paths["json"], dumps(result, indent=2) + "\n")
    return paths


__all__ = ["Checkpoint", "Study", "Variant", "parse_variants", "prepare",
           "run_study", "task_preset", "variant_config", "write_outputs"]
