"""Meta-training settings (``meta.*`` in the Hydra config), checked once where they are made.

A resume may change only some of them (``l2l.meta_snapshot.RESUMABLE_CHANGES``); the population
estimators' own settings are checked by ``l2l.estimators.evolution.check_population_settings``.
"""

from __future__ import annotations

from dataclasses import dataclass

from l2l.estimators.evolution import check_population_settings
from l2l.objectives import OBJECTIVES
from l2l.range_checks import check_range


@dataclass
class MetaConfig:
    """Meta-training settings; defaults are the paper's (see shared NOTES)."""

    iterations: int = 10_000  #: task samples ("epochs" in the official code), each one horizon
    horizon: int = 100  #: optimizee steps per task
    unroll: int = 20  #: steps per truncated unroll (one meta-step each)
    batch_size: int = 1  #: task instances per meta-iteration
    meta_lr: float = 1e-3  #: Adam learning rate of the meta-optimizer
    second_order: bool = False  #: back-propagate through the optimizee gradients too
    estimator: str = "auto"  #: "auto", or a name in l2l/estimators ("sequence", "surrogate", ...)
    #: meta-objective (``l2l.objectives``): "sum" (paper), "mean", "log_relative" or "final"
    objective: str = "sum"
    #: the data the meta-objective's losses are measured on: "train" (the optimizee's own
    #: minibatches, the paper's) or "valid" (held-out minibatches of the same problems, so the
    #: optimizer is meta-trained to generalize; tasks with a data split only)
    objective_split: str = "train"
    scale_range: float = 0.0  #: train on f(c*theta), c = exp(U[-s, s]) per coordinate (0: off)
    clip_grad_norm: float | None = None  #: clip the meta-gradient's global norm
    val_every: int = 1000  #: validate every this many iterations (and at the end)
    val_instances: int = 20  #: fixed validation instances
    checkpoint_every: int = 100  #: write latest.pt every this many iterations
    max_consecutive_skips: int = 20  #: stop after this many non-finite meta-steps in a row
    #: torch.compile the optimizer's update: true, false, or "auto" (problems of >= 4,096
    #: coordinates where a compiler exists; about 2x on CPU for MNIST). See l2l.env.runtime.
    compile: bool | str = "auto"
    seed: int = 0  #: draws the training tasks (and the learned optimizer's initial weights)
    val_seed: int | None = None  #: draws the validation problems (None: ``seed``)
    # The population estimators (pes, es, full_es; l2l/estimators/evolution.py): one
    # meta-iteration is one truncation of meta.unroll steps (full_es: one whole episode).
    sigma: float = 0.01  #: std of the antithetic perturbations of the learned weights
    particles: int = 8  #: inner trainings in the population: antithetic pairs, so even
    #: episode lengths: constant (meta.horizon) or log_uniform (per particle episode; for the
    #: TBPTT estimators per meta-iteration: horizon variation)
    lengths: str = "constant"
    min_length: int = 100  #: log_uniform: shortest episode
    max_length: int = 1000  #: log_uniform: longest episode
    es_difference: str = "plain"  #: the pairs' loss differences: plain, sign or normalized

    def __post_init__(self) -> None:
        for name in ("iterations", "horizon", "unroll", "batch_size", "val_every",
                     "val_instances", "checkpoint_every", "max_consecutive_skips"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"meta.{name} must be a positive integer, got {value!r}")
            check_range(f"meta.{name}", value, 1)
        check_range("meta.meta_lr", self.meta_lr, 0.0, low_inclusive=False)
        check_range("meta.scale_range", self.scale_range, 0.0, 10.0)
        if self.clip_grad_norm is not None:
            check_range("meta.clip_grad_norm", self.clip_grad_norm, 0.0, low_inclusive=False)
        if self.unroll > self.horizon:
            raise ValueError(f"meta.unroll={self.unroll} is longer than meta.horizon="
                             f"{self.horizon}: set meta.unroll <= meta.horizon")
        check_population_settings(self)
        if not (self.compile is True or self.compile is False or self.compile == "auto"):
            raise ValueError(f"meta.compile must be true, false or auto, got {self.compile!r}")
        if self.objective_split not in ("train", "valid"):
            raise ValueError(f"unknown meta.objective_split {self.objective_split!r}: choose "
                             "train or valid")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"unknown meta.objective {self.objective!r}: choose one of "
                             f"{', '.join(OBJECTIVES)}")
