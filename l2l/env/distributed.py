"""Data-parallel meta-training with ``torch.distributed``: several processes, one meta-batch.

Every process (rank) builds the same learned optimizer from the same seed. Per meta-iteration
rank ``r`` of ``W`` optimizes instances ``[offset + r*b, offset + (r+1)*b)`` of the meta-batch,
``b = batch_size / W``, so the ranks together cover exactly the single-process meta-batch. After
each unroll the meta-gradients (and meta-losses) are averaged over ranks: the estimators'
meta-loss is a mean over instances and the shards are equal, so the plain mean *is* the
single-process meta-gradient of the whole batch. Every rank then takes the same Adam step, so
the weights stay identical without ever being broadcast (checked once at the start).

What the ranks agree on, and how:

* a non-finite meta-gradient or meta-loss on any rank skips the step on all ranks (a flag rides
  along with the gradient all-reduce);
* a stop signal on any rank stops all ranks after the same task (a flag all-reduced per task);
* validation runs on rank 0 alone, its score is broadcast (the other ranks wait; they would
  only repeat the same computation on the same weights);
* rank 0 alone holds the run directory's lock and writes checkpoints, ``metrics.jsonl``,
  ``.hydra/``, reports and wandb; the others read the same ``latest.pt`` on resume;
* the run directory: a timestamped default ``run_name`` is rank 0's, broadcast before Hydra
  composes the config (:func:`agree_on_argv`); sweeps get one directory per job from Hydra;
* no rank waits forever: every rank must join the rendezvous within
  ``distributed.rendezvous_timeout`` seconds (the log says whom it waits for, the error names
  the ranks that never came), and every exchange waits at most ``distributed.timeout`` seconds
  (gloo's timeout), after which one line names the peer that stopped answering.

Launchers supported: ``torchrun`` (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``) and SLURM's ``srun`` without torchrun, one task per GPU (``SLURM_PROCID``,
``SLURM_STEP_NUM_TASKS`` or ``SLURM_NTASKS``, ``SLURM_LOCALID``; the master address is the
job's first node, the port derived from the job id), and submitit's local executor (what
``hydra/launcher=submitit_local`` runs, ``SUBMITIT_LOCAL_*``; on this machine). Backend:
``gloo`` on CPU, plus ``nccl`` for CUDA tensors when CUDA is available. A single process
changes nothing: the no-op
:class:`Synchronizer` is what :class:`~l2l.meta_training.MetaTrainer` uses by default.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import logging
import math
import os
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from l2l.env.launch import DistributedTimeout, launch_env, rendezvous, slurm_master
from l2l.env.run_dir import RunDirInUse, RunDirLock

log = logging.getLogger("l2l")


RENDEZVOUS_TIMEOUT = 120.0  #: seconds for every rank to join (``distributed.rendezvous_timeout``)
TIMEOUT = 600.0  #: seconds a rank waits for the others in one exchange (``distributed.timeout``)


class Synchronizer:
    """One process: every agreement is trivial. The hook :class:`MetaTrainer` calls."""

    def __init__(self, rank: int = 0, world_size: int = 1) -> None:
        self.rank, self.world_size = rank, world_size
        #: whether this process writes files (checkpoints, metrics, reports): rank 0
        self.is_writer = rank == 0

    def shard(self, batch_size: int) -> tuple[int, int]:
        """``(start, count)``: this rank's slice of a meta-batch of ``batch_size`` instances."""
        if batch_size % self.world_size:
            raise ValueError(f"meta.batch_size={batch_size} is not divisible by the "
                             f"{self.world_size} processes: choose a multiple of "
                             f"{self.world_size}")
        count = batch_size // self.world_size
        return self.rank * count, count

    def reduce_gradients(self, params: Iterable[nn.Parameter], finite: bool,
                         meta_loss: float) -> tuple[bool, float]:
        """Average the meta-gradients in ``.grad`` and the meta-loss over ranks; finite only if
        finite on every rank (so all ranks skip a step together)."""
        return finite, meta_loss

    def any(self, flag: bool) -> bool:
        """True on every rank if ``flag`` is true on any rank."""
        return flag

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value`` (plain data and tensors), in rank order, on every rank."""
        return [value]

    def from_writer(self, compute: Callable[[], float]) -> float:
        """``compute()`` on rank 0, its result on every rank (validation scores)."""
        return compute()

    def check_same(self, iteration: int, params: Iterable[nn.Parameter]) -> None:
        """Refuse to go on if the ranks do not hold the same iteration and weights."""


class TorchDistributed(Synchronizer):
    """The agreements over an initialized default ``torch.distributed`` process group."""

    def __init__(self, timeout: float = TIMEOUT) -> None:
        super().__init__(dist.get_rank(), dist.get_world_size())
        self.timeout = timeout

    @contextlib.contextmanager
    def _exchange(self, what: str) -> Iterator[None]:
        """A collective that fails (gloo's timeout: a peer stopped by ``kill -STOP``, hung or
        dead) becomes one line naming the ranks waited for and the fix."""
        try:
            yield
        except RuntimeError as error:
            global _broken
            _broken = True  # destroying the process group could wait on the lost peer again
            others = [r for r in range(self.world_size) if r != self.rank]
            who = f"rank {others[0]}" if len(others) == 1 else \
                f"one of ranks {', '.join(map(str, others))}"
            first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
            raise DistributedTimeout(
                f"rank {self.rank} of {self.world_size}: {who} stopped answering while "
                f"exchanging {what} (no reply within distributed.timeout={self.timeout:g} s: "
                f"{first}); check that process (frozen, hung, killed, out of memory), then "
                "rerun the same command to resume from latest.pt, or raise "
                "distributed.timeout if a slow validation is expected") from None

    def reduce_gradients(self, params: Iterable[nn.Parameter], finite: bool,
                         meta_loss: float) -> tuple[bool, float]:
        params = list(params)
        # float64 so that the mean over ranks loses nothing; one all-reduce carries it all
        parts = [p.grad.detach().reshape(-1).double() if p.grad is not None
                 else torch.zeros(0, dtype=torch.float64, device=p.device) for p in params]
        device = params[0].device
        tail = torch.tensor([meta_loss, 0.0 if finite else 1.0], dtype=torch.float64,
                            device=device)
        flat = torch.cat([*parts, tail])
        with self._exchange("meta-gradients"):
            dist.all_reduce(flat)
        if flat[-1].item() > 0:
            return False, float(flat[-2].item()) / self.world_size
        flat /= self.world_size
        start = 0
        for p, part in zip(params, parts):
            if p.grad is not None:
                p.grad.copy_(flat[start:start + part.numel()].view_as(p.grad))
            start += part.numel()
        return True, float(flat[-2].item())

    def gather(self, value: Any) -> list[Any]:
        out: list[Any] = [None] * self.world_size
        with self._exchange("the particles' states"):
            dist.all_gather_object(out, value)
        return out

    def any(self, flag: bool) -> bool:
        value = torch.tensor([1 if flag else 0], dtype=torch.int64)
        with self._exchange("the stop flags"):
            dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def from_writer(self, compute: Callable[[], float]) -> float:
        value = torch.tensor([compute() if self.rank == 0 else 0.0], dtype=torch.float64)
        with self._exchange("the validation score"):
            dist.broadcast(value, src=0)
        return float(value.item())

    def check_same(self, iteration: int, params: Iterable[nn.Parameter]) -> None:
        params = list(params)
        summary = torch.tensor([float(iteration),
                                sum(float(p.detach().double().sum()) for p in params),
                                sum(float(p.detach().double().square().sum()) for p in params)],
                               dtype=torch.float64)
        low, high = summary.clone(), summary.clone()
        with self._exchange("the starting state"):
            dist.all_reduce(low, op=dist.ReduceOp.MIN)
            dist.all_reduce(high, op=dist.ReduceOp.MAX)
        if not torch.equal(low, high):
            raise RuntimeError(
                f"the {self.world_size} processes do not start from the same state (iteration "
                f"and weight checksums range {low.tolist()} .. {high.tolist()}): were they "
                "given different configs, or different run directories?")


_current: Synchronizer = Synchronizer()
_broken = False  #: a collective failed: leave the process group to the exiting process


def current() -> Synchronizer:
    """The synchronizer of this process (the no-op one unless :func:`setup` started a group)."""
    return _current


def is_writer() -> bool:
    """Whether this process writes the run's files: rank 0 (also before :func:`setup`)."""
    found = launch_env()
    return found is None or found[0] == 0


def init_group(rendezvous_timeout: float = RENDEZVOUS_TIMEOUT,
               timeout: float = TIMEOUT) -> Synchronizer:
    """Join the process group (once) if launched as several processes; the synchronizer.
    Every rank must join within ``rendezvous_timeout`` seconds (else one line names the ranks
    that did not); every later exchange waits at most ``timeout`` seconds for the others."""
    global _current
    found = launch_env()
    if found is None or isinstance(_current, TorchDistributed):
        return _current
    rank, world, _ = found
    if "MASTER_ADDR" not in os.environ or "MASTER_PORT" not in os.environ:
        slurm_master()
    store = rendezvous(rank, world, rendezvous_timeout)
    # gloo for CPU tensors (flags, scores, CPU gradients), nccl for CUDA gradients
    backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend, store=dist.PrefixStore("group", store), rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=timeout))
    atexit.register(_shutdown)
    _current = TorchDistributed(timeout)
    return _current


#: seconds the exiting process gives gloo's worker threads to drop the last collective's tensors
GLOO_DRAIN = 0.1


def _shutdown() -> None:
    """Destroy the process group while the interpreter is whole, then let gloo's workers finish.

    A gloo worker thread releases a finished collective's tensors after ``wait()`` has already
    returned, and releasing a tensor takes the GIL. If the interpreter is finalizing by then,
    taking the GIL ends the thread inside a C++ destructor, and the process aborts
    ("terminate called without an active exception", SIGABRT: a finished run fails). The group
    outlives ``destroy_process_group`` (its workers stay up), so sleeping, which hands them the
    GIL, is what closes that window."""
    if dist.is_initialized() and not _broken:
        with contextlib.suppress(Exception):
            dist.destroy_process_group()
        time.sleep(GLOO_DRAIN)


def timeouts(cfg: Any = None, argv: list[str] | None = None) -> tuple[float, float]:
    """``(rendezvous_timeout, timeout)`` from the config's ``distributed`` group, or, before
    Hydra composed it, from ``distributed.*=`` overrides in ``argv``; checked positive."""
    values: dict[str, Any] = {"rendezvous_timeout": RENDEZVOUS_TIMEOUT, "timeout": TIMEOUT}
    if cfg is not None:
        group = cfg.get("distributed") or {}
        values.update({k: group.get(k, v) for k, v in values.items()})
    for arg in argv or []:
        key, _, value = arg.lstrip("+").partition("=")
        if key.startswith("distributed.") and key[len("distributed."):] in values:
            values[key[len("distributed."):]] = value
    out = []
    for key, value in values.items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if isinstance(value, bool) or not number > 0 or math.isinf(number):
            raise ValueError(f"distributed.{key} must be a positive number of seconds, got "
                             f"{value!r}")
        out.append(number)
    return out[0], out[1]


def setup(cfg: Any) -> Synchronizer:
    """Prepare this process of a (possibly) distributed run of ``train.py``: check the config,
    join the group, give rank ``r`` the GPU ``cuda:<local rank>``, and keep the other ranks
    from writing: no progress bars, no log file (rank 0 writes ``train.log``)."""
    found = launch_env()
    if found is None:
        return current()
    rank, world, local = found
    if cfg.mode != "meta_train":
        raise ValueError(f"mode={cfg.mode} runs in one process; only mode=meta_train is split "
                         f"over the {world} processes: launch it without torchrun/srun")
    if cfg.meta.batch_size % world:
        raise ValueError(f"meta.batch_size={cfg.meta.batch_size} is not divisible by the {world} "
                         f"processes: choose a multiple of {world}")
    rendezvous_timeout, timeout = timeouts(cfg)
    if str(cfg.device).startswith("cuda"):
        cfg.device = f"cuda:{local}"
        torch.cuda.set_device(local)
    sync = init_group(rendezvous_timeout, timeout)
    if rank != 0:
        cfg.progress = False
        for handler in list(logging.getLogger().handlers):
            if isinstance(handler, logging.FileHandler):
                logging.getLogger().removeHandler(handler)
                handler.close()
        log.setLevel(logging.WARNING)
    else:
        log.info("data-parallel meta-training over %d processes (%s), %d instances each",
                 world, dist.get_backend(), cfg.meta.batch_size // world)
    return sync


@contextlib.contextmanager
def run_dir_lock(run_dir: str | Path) -> Iterator[None]:
    """:class:`~l2l.env.run_dir.RunDirLock` taken by rank 0 alone; the others learn whether it
    succeeded, so a directory in use stops every rank with the same error, none hangs."""
    sync = current()
    lock = RunDirLock(run_dir) if sync.is_writer else None
    error: RunDirInUse | None = None
    if lock is not None:
        try:
            lock.acquire()
        except RunDirInUse as refused:
            error = refused
    if sync.any(error is not None):
        raise error or RunDirInUse(f"run directory {run_dir} is in use (rank 0 could not lock "
                                   "it): wait for the other run, or choose another run_name")
    try:
        yield
    finally:
        if lock is not None:
            lock.release()


def agree_on_argv(argv: list[str]) -> list[str]:
    """Command-line arguments with ``run_name=<rank 0's timestamp>`` added when several
    processes would otherwise each resolve the default ``${now:...}`` run name (and could land
    in different directories). Named runs, explicit ``hydra.run.dir`` and sweeps (whose
    directory Hydra resolves once, in the launching process) are left alone."""
    if launch_env() is None or any(a in ("-m", "--multirun") for a in argv):
        return argv
    if any(a.split("=")[0].lstrip("+") in ("run_name", "hydra.run.dir") for a in argv):
        return argv
    init_group(*timeouts(argv=argv))
    stamp = torch.tensor([int(datetime.datetime.now().timestamp())], dtype=torch.int64)
    dist.broadcast(stamp, src=0)
    name = datetime.datetime.fromtimestamp(int(stamp.item())).strftime("%Y-%m-%d_%H-%M-%S")
    return [*argv, f"run_name={name}"]


def pass_on_signal(signum: int | None) -> None:
    """After a stop signal was turned into a saved checkpoint, give it to the handler that was
    installed before ours, if that is Python code: under submitit (SLURM via
    hydra-submitit-launcher) that handler requeues the job, which then resumes from
    ``latest.pt``. A plain run has no such handler: nothing happens."""
    if signum is None:
        return
    handler = signal.getsignal(signum)
    if callable(handler) and handler is not signal.default_int_handler:
        handler(signum, None)
