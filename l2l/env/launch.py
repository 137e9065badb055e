"""How the processes of a distributed run find each other: what the launcher (torchrun, srun,
submitit) says this process is, and the rendezvous every rank must join in time, failing with
one line that names the ranks that did not. :mod:`l2l.env.distributed` builds on it."""

from __future__ import annotations

import datetime
import logging
import os
import socket
import subprocess
import time

import torch.distributed as dist

log = logging.getLogger("l2l")


class DistributedTimeout(RuntimeError):
    """A rank never joined, or stopped answering (frozen, hung, dead): the message names it."""


def launch_env() -> tuple[int, int, int] | None:
    """``(rank, world_size, local_rank)`` when launched as one of several processes by torchrun
    or srun, else None. torchrun's variables win over SLURM's (torchrun inside a SLURM job)."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", rank))
    elif "SLURM_PROCID" in os.environ and ("SLURM_STEP_NUM_TASKS" in os.environ
                                          or "SLURM_NTASKS" in os.environ):
        rank = int(os.environ["SLURM_PROCID"])
        world = int(os.environ.get("SLURM_STEP_NUM_TASKS") or os.environ["SLURM_NTASKS"])
        local = int(os.environ.get("SLURM_LOCALID", 0))
    elif "SUBMITIT_LOCAL_GLOBALID" in os.environ:  # submitit's local executor (tests, laptops)
        rank = int(os.environ["SUBMITIT_LOCAL_GLOBALID"])
        world = int(os.environ.get("SUBMITIT_LOCAL_NTASKS", 1))
        local = int(os.environ.get("SUBMITIT_LOCAL_LOCALID", rank))
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(20000 + int(os.environ.get(
            "SUBMITIT_LOCAL_JOB_ID", 0)) % 20000))
    else:
        return None
    return (rank, world, local) if world > 1 else None


def slurm_master() -> None:
    """MASTER_ADDR/MASTER_PORT for srun without torchrun: the first node, a port from the job."""
    if "MASTER_ADDR" not in os.environ:
        nodes = os.environ.get("SLURM_STEP_NODELIST") or os.environ.get("SLURM_JOB_NODELIST", "")
        try:
            first = subprocess.run(["scontrol", "show", "hostnames", nodes], check=True,
                                   capture_output=True, text=True).stdout.split()[0]
        except (OSError, subprocess.CalledProcessError, IndexError):
            first = nodes.split(",")[0].split("[")[0] or "127.0.0.1"
        os.environ["MASTER_ADDR"] = first
    os.environ.setdefault("MASTER_PORT", str(20000 + int(os.environ.get("SLURM_JOB_ID", 0))
                                             % 20000))


def rendezvous(rank: int, world: int, timeout: float) -> dist.Store:
    """Meet the other ranks at ``MASTER_ADDR:MASTER_PORT`` (rank 0 hosts the store, unless
    torchrun's agent already does); log whom this rank waits for, and fail naming them."""
    where = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
    agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == str(True)
    hosting = rank == 0 and not agent
    log.info("rank %d of %d: %s the rendezvous at %s (distributed.rendezvous_timeout=%g s)",
             rank, world, "hosting" if hosting else "joining", where, timeout)
    if not hosting:
        wait_for_host(rank, world, timeout)
    try:
        base = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world,
                             is_master=hosting, timeout=datetime.timedelta(seconds=timeout),
                             wait_for_workers=False)
    except (RuntimeError, ValueError) as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise unreachable(rank, world, timeout, first, hosting) from None
    store = dist.PrefixStore(f"l2l/{os.environ.get('TORCHELASTIC_RESTART_COUNT', 0)}", base)
    store.set(f"joined/{rank}", str(os.getpid()))
    deadline = time.monotonic() + timeout
    missing = list(range(world))
    told = False
    while True:
        missing = [r for r in missing if not store.check([f"joined/{r}"])]
        if not missing:
            return base
        if time.monotonic() > deadline:
            raise DistributedTimeout(
                f"rank {rank} of {world}: rank{'s' if len(missing) > 1 else ''} "
                f"{', '.join(map(str, missing))} did not join the rendezvous at {where} within "
                f"distributed.rendezvous_timeout={timeout:g} s: start every rank (check the "
                "launcher's task count, SLURM_NTASKS or --nproc_per_node, and that they all "
                "got the same MASTER_ADDR/MASTER_PORT), or raise distributed.rendezvous_timeout")
        if not told:
            log.info("rank %d: waiting for rank(s) %s at %s", rank,
                     ", ".join(map(str, missing)), where)
            told = True
        time.sleep(0.1)


def wait_for_host(rank: int, world: int, timeout: float) -> None:
    """Wait until the rendezvous host accepts connections, quietly (torch's store client logs
    each failed try with a C++ stack trace), or raise naming it."""
    addr, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((addr, port), timeout=1.0).close()
            return
        except OSError as error:
            if time.monotonic() > deadline:
                raise unreachable(rank, world, timeout, error.strerror or str(error),
                                   hosting=False) from None
            time.sleep(0.2)


def unreachable(rank: int, world: int, timeout: float, reason: str,
                 hosting: bool) -> DistributedTimeout:
    where = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
    agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == str(True)
    what = (f"could not open the rendezvous at {where}" if hosting else
            f"could not reach {'the launcher' if agent else 'rank 0'} at {where}")
    return DistributedTimeout(
        f"rank {rank} of {world} {what} within distributed.rendezvous_timeout={timeout:g} s "
        f"({reason}): start every rank (check the launcher's task count, SLURM_NTASKS or "
        "--nproc_per_node, and MASTER_ADDR/MASTER_PORT), or raise "
        "distributed.rendezvous_timeout")
