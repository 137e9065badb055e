"""A population of inner trainings advanced a truncation at a time, forward only.

The evolution-strategies estimators (``l2l/estimators/pes.py``, ``es.py``, ``full_es.py``) do not
differentiate an unroll: they run many inner trainings (particles), each with its own perturbed
copy of the learned weights, and compare their meta-losses. This module owns those particles:

* ``2 H`` particles in ``H`` antithetic pairs, laid out as one ``(2 H, n)`` problem: rows
  ``j`` and ``j + H`` are pair ``j``'s ``+`` and ``-`` twins. Twins train the same problem
  instance on the same minibatches (the same instance id, and the data step is the population's
  clock), so their meta-losses differ by the perturbation alone; each twin keeps its own
  parameters and optimizer state.
* Each pair has its own episode length, drawn from an unroll-length schedule
  (:mod:`l2l.unroll_lengths`) when its episode starts. With ``random_offsets`` the first
  episodes start part-way (a random number of steps already counted), so the pairs reach their
  ends at different truncations rather than in lockstep.
* :meth:`TruncatedStep.unroll` advances every particle ``K`` steps under ``torch.no_grad``.
  A pair that reaches its length resets at once, mid-truncation if need be: a new instance
  (instance id ``episode * H + j``, deterministic from the seed; a process owning some of the
  pairs, ``meta.particles`` split over ``torchrun``, uses their ids in the whole population),
  fresh parameters and optimizer state. The truncation's meta-loss of each particle comes back
  in two parts, the steps of the episode it started in and those of the episode a reset began
  (PES weighs them differently).

Everything a resume needs is in :meth:`state_dict` (the instances are rebuilt from their ids).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from l2l.interface import State, with_horizon
from l2l.learned.base import LearnedOptimizer
from l2l.objectives import MetaObjective
from l2l.tasks.base import Instances, TaskFamily
from l2l.tasks.scaled import random_scale
from l2l.tasks.seeding import instance_generator
from l2l.unroll_lengths import LengthSchedule


class _UpdateCall(nn.Module):
    """``optimizer.update`` as a module's forward, for ``torch.func.functional_call``."""

    def __init__(self, optimizer: LearnedOptimizer) -> None:
        super().__init__()
        self.opt = optimizer

    def forward(self, grads: Tensor, state: State, params: Tensor) -> tuple[Tensor, State]:
        return self.opt.update(grads, state, params)


class FlatWeights:
    """The learned optimizer's weights as one vector ``(d,)``, and back, per particle."""

    def __init__(self, optimizer: LearnedOptimizer) -> None:
        self.optimizer = optimizer
        self.names, self.shapes, self.slices = [], [], []
        start = 0
        for name, p in optimizer.named_parameters():
            self.names.append(name)
            self.shapes.append(p.shape)
            self.slices.append(slice(start, start + p.numel()))
            start += p.numel()
        self.size = start

    def vector(self) -> Tensor:
        """The current weights, detached, ``(d,)``."""
        return nn.utils.parameters_to_vector(self.optimizer.parameters()).detach()

    def add_to_grad(self, gradient: Tensor) -> None:
        """Accumulate a flat gradient ``(d,)`` into the weights' ``.grad``."""
        for p, sl in zip(self.optimizer.parameters(), self.slices):
            g = gradient[sl].view_as(p).to(device=p.device, dtype=p.dtype)
            p.grad = g.clone() if p.grad is None else p.grad + g

    def batched(self, weights: Tensor) -> dict[str, Tensor]:
        """``(P, d)`` weights as one dict with a trailing ``(P, 1)`` particle axis."""
        P = weights.shape[0]
        return {"opt." + name: weights[:, sl].T.reshape(*shape, P, 1)
                for name, shape, sl in zip(self.names, self.shapes, self.slices)}

    def single(self, weights: Tensor) -> dict[str, Tensor]:
        """One particle's ``(d,)`` weights as a dict of the weights' shapes."""
        return {"opt." + name: weights[sl].view(shape)
                for name, shape, sl in zip(self.names, self.shapes, self.slices)}


class _PartsInstances(Instances):
    """Instances that cannot merge into one batch (e.g. a mixture's families), evaluated part by
    part and stacked."""

    def __init__(self, parts: list[Instances]) -> None:
        self.parts = parts
        self.init_params = torch.cat([p.init_params for p in parts])

    def loss(self, params: Tensor, step: int) -> Tensor:
        rows = torch.cumsum(torch.tensor([0] + [p.batch_size for p in self.parts]), 0).tolist()
        return torch.cat([p.loss(params[a:b], step)
                          for p, a, b in zip(self.parts, rows[:-1], rows[1:])])

    def repeat(self, times: int) -> Instances:
        return _PartsInstances(self.parts * times)

    def held_out(self) -> Instances:
        return _PartsInstances([p.held_out() for p in self.parts])


def concat_instances(parts: list[Instances]) -> Instances:
    """``parts`` as one batch: merged where the family can (``Instances.concat``), else stacked."""
    kinds = {type(p) for p in parts}
    if len(kinds) == 1:
        try:
            return kinds.pop().concat(parts)
        except NotImplementedError:
            pass
    return _PartsInstances(parts)


@dataclass
class Truncation:
    """What one truncation of the population gave, per particle ``(2 H,)``."""

    before: Tensor  #: summed meta-objective over the steps of the episode it started in
    after: Tensor  #: summed meta-objective over the steps of an episode begun by a reset (or 0)
    reset: Tensor  #: bool: the pair reached its length (and restarted) in this truncation
    steps: int  #: optimizee steps of every particle

    @property
    def finite(self) -> Tensor:
        """bool ``(2 H,)``: the particle's meta-losses are finite."""
        return torch.isfinite(self.before) & torch.isfinite(self.after)


class TruncatedStep:
    """``2 * pairs`` inner trainings of ``task`` by perturbed copies of ``optimizer``."""

    def __init__(self, task: TaskFamily, optimizer: LearnedOptimizer, objective: MetaObjective,
                 *, pairs: int, lengths: LengthSchedule, seed: int = 0,
                 random_offsets: bool = True, scale_range: float = 0.0, held_out: bool = False,
                 first_pair: int = 0, total_pairs: int | None = None,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> None:
        """``held_out``: the meta-objective reads the losses on held-out data
        (``Instances.held_out``) rather than the training minibatches'. ``first_pair`` and
        ``total_pairs``: this population is pairs ``first_pair ..`` of a population of
        ``total_pairs`` split over processes (one process's share: the same instances, lengths
        and offsets as those pairs have in the whole population)."""
        if isinstance(pairs, bool) or not isinstance(pairs, int) or pairs < 1:
            raise ValueError(f"a population needs at least one antithetic pair, got {pairs!r}")
        if len(set(task.layouts())) > 1:  # the particles share one (2 H, n) batch
            raise ValueError(f"the population estimators (pes, es, full_es) step every particle "
                             f"in one batch of one parameter layout, but task "
                             f"{getattr(task, 'name', task)} mixes {len(set(task.layouts()))} "
                             "layouts (differently sized networks): build its population "
                             "with l2l.mixture_population.build_population (one sub-population "
                             "per layout)")
        self.task, self.optimizer, self.objective = task, optimizer, objective
        self.pairs, self.lengths, self.seed = pairs, lengths, seed
        self.first_pair = first_pair
        self.total_pairs = pairs if total_pairs is None else total_pairs
        if first_pair < 0 or first_pair + pairs > self.total_pairs:
            raise ValueError(f"pairs {first_pair}..{first_pair + pairs - 1} do not lie in a "
                             f"population of {self.total_pairs}")
        self.scale_range, self.held_out = scale_range, held_out
        self.device, self.dtype = torch.device(device), dtype
        self.weights = FlatWeights(optimizer)
        self._call = _UpdateCall(optimizer)
        self.clock = 0  #: the data step: the population's optimizee steps so far
        self.episode = torch.zeros(pairs, dtype=torch.long)  #: per pair: episodes begun - 1
        self.length = torch.tensor([lengths.draw(seed, self._episode_id(j, 0))
                                    for j in range(pairs)])  #: per pair: its episode's length
        self.step = torch.zeros(pairs, dtype=torch.long)  #: per pair: steps done (or counted)
        if random_offsets:
            for j in range(pairs):
                g = instance_generator("unroll_offsets", seed, "train", first_pair + j)
                self.step[j] = int(torch.randint(int(self.length[j]), (), generator=g))
        self._parts = [self._instance(j) for j in range(pairs)]
        self._rebuild()
        self.params = self.instances.init_params.clone()
        # a particle started at a random offset has the rest of its episode to run
        self.state = with_horizon(optimizer.init(self.params), self.rows(self.length - self.step))
        self.initial_loss, self.grads = self._losses(self.params)

    # -- instances -------------------------------------------------------------------------

    def _episode_id(self, pair: int, episode: int) -> int:
        return episode * self.total_pairs + self.first_pair + pair

    def _instance(self, pair: int) -> Instances:
        """Pair ``pair``'s problem of its current episode (one instance)."""
        offset = self._episode_id(pair, int(self.episode[pair]))
        inst = self.task.sample(1, self.seed, "train", offset=offset, device=self.device,
                                dtype=self.dtype)
        return random_scale(inst, self.scale_range, self.seed, "train", offset)

    def _rebuild(self) -> None:
        self.instances = concat_instances(self._parts).repeat(2)  # rows j and j + H: twins
        self.meta_instances = self.instances.held_out() if self.held_out else self.instances

    def _losses(self, params: Tensor) -> tuple[Tensor, Tensor]:
        """The meta-objective's losses at ``params`` and the training gradient."""
        loss, grads = self.instances.loss_and_grad(params, self.clock)
        if self.held_out:
            loss = self.meta_instances.loss(params, self.clock)
        return loss, grads

    @property
    def particles(self) -> int:
        return 2 * self.pairs

    def rows(self, per_pair: Tensor) -> Tensor:
        """A per-pair tensor ``(H, ...)`` for every particle ``(2 H, ...)``."""
        return torch.cat([per_pair, per_pair])

    # -- resets ----------------------------------------------------------------------------

    def reset_pairs(self, mask: Tensor) -> None:
        """Start a new episode (new instance, length, parameters and state) for the pairs in
        ``mask (H,)``."""
        pairs = mask.nonzero().flatten().tolist()
        if not pairs:
            return
        for j in pairs:
            self.episode[j] += 1
            self.step[j] = 0
            self.length[j] = self.lengths.draw(self.seed, self._episode_id(j, int(self.episode[j])))
            self._parts[j] = self._instance(j)
        self._rebuild()
        rows = self.rows(mask.to(self.params.device))
        fresh_params = self.instances.init_params
        fresh_state = with_horizon(self.optimizer.init(fresh_params), self.rows(self.length))
        loss, grads = self._losses(fresh_params)
        column = rows.view(-1, 1)
        self.params = torch.where(column, fresh_params, self.params)
        self.grads = torch.where(column, grads, self.grads)
        self.initial_loss = torch.where(rows, loss, self.initial_loss)
        self.state = {k: torch.where(rows.view(-1, *[1] * (v.dim() - 1)), fresh_state[k], v)
                      for k, v in self.state.items()}

    def restart(self) -> None:
        """A new episode for every pair, from step 0 (``full_es``: one episode per estimate)."""
        self.reset_pairs(torch.ones(self.pairs, dtype=torch.bool))

    # -- the forward-only unroll ------------------------------------------------------------

    def _update(self, weights: Tensor) -> tuple[Tensor, State]:
        """Every particle's update with its own weights ``weights[p]``."""
        if self.optimizer.particle_axis():
            return functional_call(self._call, self.weights.batched(weights),
                                   (self.grads, self.state, self.params))
        updates, states = [], []
        for p in range(self.particles):
            update, state = functional_call(
                self._call, self.weights.single(weights[p]),
                (self.grads[p:p + 1], {k: v[p:p + 1] for k, v in self.state.items()},
                 self.params[p:p + 1]))
            updates.append(update)
            states.append(state)
        return torch.cat(updates), {k: torch.cat([s[k] for s in states]) for k in states[0]}

    @torch.no_grad()
    def unroll(self, weights: Tensor, steps: int) -> Truncation:
        """Advance every particle ``steps`` optimizee steps, particle ``p`` with the learned
        weights ``weights[p]`` (``(2 H, d)``), resetting pairs that reach their lengths."""
        if weights.shape != (self.particles, self.weights.size):
            raise ValueError(f"weights must have shape ({self.particles}, {self.weights.size}), "
                             f"got {tuple(weights.shape)}")
        if steps > self.lengths.shortest:
            raise ValueError(f"a truncation of {steps} steps is longer than the shortest unroll "
                             f"length {self.lengths.shortest}: set meta.unroll <= it")
        weights = weights.to(self.optimizer.dtype)
        before = self.params.new_zeros(self.particles)
        after = self.params.new_zeros(self.particles)
        reset = torch.zeros(self.pairs, dtype=torch.bool)
        for _ in range(steps):
            update, self.state = self._update(weights)
            self.params = self.params + update.to(self.params.dtype)
            self.clock += 1
            loss, self.grads = self._losses(self.params)
            value = self.objective(loss, self.initial_loss, self.rows(self.length).to(loss),
                                   step=self.rows(self.step + 1).to(loss))
            new = self.rows(reset).to(value.device)
            before = before + torch.where(new, torch.zeros_like(value), value)
            after = after + torch.where(new, value, torch.zeros_like(value))
            self.step += 1
            done = self.step >= self.length
            if bool(done.any()):
                reset |= done
                self.reset_pairs(done)
        return Truncation(before, after, self.rows(reset), steps)

    # -- checkpoints -----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {"clock": self.clock, "episode": self.episode.clone(),
                "length": self.length.clone(), "step": self.step.clone(),
                "params": self.params.clone(), "grads": self.grads.clone(),
                "initial_loss": self.initial_loss.clone(),
                "state": {k: v.clone() for k, v in self.state.items()}}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        if saved["episode"].shape != self.episode.shape:
            raise ValueError(f"the checkpoint's population has {saved['episode'].numel()} "
                             f"pairs, this run {self.pairs}")
        self.clock = int(saved["clock"])
        self.episode, self.length, self.step = (saved[k].clone().cpu()
                                                for k in ("episode", "length", "step"))
        self.params, self.grads, self.initial_loss = (saved[k].to(self.device)
                                                      for k in ("params", "grads",
                                                                "initial_loss"))
        self.state = {k: v.to(self.device) for k, v in saved["state"].items()}
        self._parts = [self._instance(j) for j in range(self.pairs)]
        self._rebuild()
