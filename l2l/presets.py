"""Task presets and the generalization study's variants, read from the config.

A variant (``generalization.variants``) is a ``conf/task`` preset plus optional ``eval_steps``
and task ``kwargs`` overrides; ``checkpoints=`` lists what the study evaluates. Presets stay
defined only in ``conf/task``: :func:`task_preset` composes one the way Hydra would, so that a
variant (or a checkpoint's recorded training task, :mod:`l2l.checkpoint_task`) names a preset
instead of repeating it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from l2l.config_checks import SIZE_LIMITS
from l2l.run_config import plain


@dataclass
class Variant:
    """One column of the paper's generalization figure: a task preset (``conf/task/<task>.yaml``;
    ``None``: the run's own ``task=``), optionally run for ``eval_steps`` steps and with some of
    the task's ``kwargs`` changed."""

    name: str
    task: str | None = None
    eval_steps: int | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)


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
    for raw in plain(settings.get("variants") or []):
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
    items = plain(raw)
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
