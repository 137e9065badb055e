"""Up-front checks of a run's config: a bad value is refused before any work starts.

``train.py`` calls :func:`check_config` first, so that a typo costs one log line naming the
key, the problem and the fix, not an hour of tuning followed by a traceback (a non-numeric
``eval.threshold`` used to fail only when the first result was written), nor a silent run of
the wrong experiment (an empty tuning grid, a baseline tuned twice), nor a run that builds a
billion instances without a word.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from l2l.meta_training import MetaConfig

#: Upper bounds of the sizes that are never meant to be huge. Each is far above every
#: experiment of the paper and of docs/results (100 test instances, 20 tuning instances per learning
#: rate, horizons of 100-200 steps, meta-batches of up to 64) and far below what would exhaust
#: memory or run for days without a message: the instances of an evaluation, a tuning grid and
#: a meta-batch are built and run as one batch, and every step's loss of every instance is kept
#: for the curves. A typo such as ``eval.instances=1000000000`` is caught here.
SIZE_LIMITS: dict[str, int] = {
    "eval.steps": 100_000,
    "eval.instances": 10_000,
    "tune.steps": 100_000,
    "tune.instances": 10_000,
    "tune.per_decade": 100,
    "meta.horizon": 100_000,
    "meta.unroll": 100_000,
    "meta.batch_size": 10_000,
    "meta.val_instances": 10_000,
}
#: the tuning batch: every learning rate of the grid runs ``tune.instances`` instances at once
MAX_TUNING_BATCH = 100_000
#: ``meta.*`` keys that are not options: MetaConfig takes them from the run's other settings
META_FROM_ELSEWHERE = {"seed": "seed=", "val_seed": "eval.seed="}


def check_config(cfg: DictConfig) -> None:
    """Raise ``ValueError`` (one line: the key, the problem, the fix) for the first bad value
    among the sizes, the tuning grid, ``eval.threshold``, ``eval.baselines`` and ``meta.*``."""
    check_sizes(cfg)
    check_tuning_grid(cfg)
    check_threshold(OmegaConf.select(cfg, "eval.threshold"))
    baselines = list(OmegaConf.select(cfg, "eval.baselines") or [])
    repeated = sorted({name for name in baselines if baselines.count(name) > 1}, key=str)
    if repeated:
        raise ValueError(f"eval.baselines lists {', '.join(map(repr, repeated))} more than "
                         "once (each would be tuned and reported again): list each baseline once")
    check_meta_keys(OmegaConf.select(cfg, "meta") or {})


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_sizes(cfg: DictConfig) -> None:
    """``eval.*`` and ``tune.*`` sizes: positive integers up to :data:`SIZE_LIMITS`; ``meta.*``
    sizes: up to their limits (the rest of ``meta.*`` is checked by :class:`MetaConfig`)."""
    for key, limit in SIZE_LIMITS.items():
        value = OmegaConf.select(cfg, key)
        if not key.startswith("meta.") and (not _is_int(value) or value < 1):
            raise ValueError(f"{key} must be a positive integer, got {value!r}")
        if _is_int(value) and value > limit:
            raise ValueError(f"{key}={value} is above its limit of {limit:,} (far beyond any "
                             "experiment, and enough to exhaust memory or run for days without "
                             f"a message): set {key} <= {limit} (see l2l/config_checks.py)")


def check_tuning_grid(cfg: DictConfig) -> None:
    """``tune.low .. tune.high`` must be a log-spaced grid of at least one learning rate, and
    the whole grid times ``tune.instances`` one batch of at most :data:`MAX_TUNING_BATCH`."""
    low, high = OmegaConf.select(cfg, "tune.low"), OmegaConf.select(cfg, "tune.high")
    for key, value in (("tune.low", low), ("tune.high", high)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) \
                or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{key}={value!r} must be a positive learning rate (the tuning "
                             "grid is log-spaced): e.g. tune.low=1e-4 tune.high=10")
    if low >= high:
        raise ValueError(f"tune.low={low} must be below tune.high={high} (the learning-rate "
                         "grid would be empty): set tune.low < tune.high")
    rates = round(math.log10(high / low) * cfg.tune.per_decade) + 1
    if rates * cfg.tune.instances > MAX_TUNING_BATCH:
        raise ValueError(f"the tuning grid has {rates} learning rates x tune.instances="
                         f"{cfg.tune.instances}, a batch above {MAX_TUNING_BATCH:,}: narrow "
                         "tune.low..tune.high or lower tune.per_decade or tune.instances")


def check_threshold(value: Any) -> None:
    """``eval.threshold`` (the loss that "steps to threshold" counts to): a number or null."""
    if value is None:
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
        raise ValueError(f"eval.threshold={value!r} must be a number (the loss whose first "
                         "step is reported) or null (none); it defaults to task.threshold")


def check_meta_keys(meta: Mapping[str, Any]) -> None:
    """Refuse a ``meta.*`` key that :class:`MetaConfig` does not have, suggesting the closest
    (``+meta.itertions=3``: did you mean 'iterations'?)."""
    known = [f.name for f in dataclasses.fields(MetaConfig) if f.name not in META_FROM_ELSEWHERE]
    for key in meta:
        if key in known:
            continue
        if key in META_FROM_ELSEWHERE:
            raise ValueError(f"meta.{key} is not a meta option: set {META_FROM_ELSEWHERE[key]} "
                             "instead")
        close = difflib.get_close_matches(str(key), known, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"the options are {', '.join(known)}"
        raise ValueError(f"unknown meta option {key!r} ({hint})")
