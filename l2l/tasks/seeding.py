"""Deterministic seeding shared by the task families.

Instance ``i`` of a sample depends on ``(seed, split, offset + i)`` only: ``instance_generator``
gives each instance its own ``torch.Generator`` seeded from a hash of ``(family namespace, seed,
split, instance id)``, and ``stream_key`` derives the 64-bit key of a counter-based stream (for
example the minibatch indices of ``l2l.tasks.mnist_common``).
"""

from __future__ import annotations

import hashlib

import torch


def _hash64(*parts: object) -> int:
    """A stable (process- and platform-independent) 64-bit hash of ``parts``."""
    text = "\x1f".join(f"{type(p).__name__}:{p}" for p in parts)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def instance_generator(namespace: str, seed: int, split: str, index: int) -> torch.Generator:
    """A CPU generator owned by instance ``index`` of ``(seed, split)`` of family ``namespace``."""
    g = torch.Generator(device="cpu")
    g.manual_seed(_hash64(namespace, "instance", int(seed), split, int(index)) & (2**63 - 1))
    return g


def stream_key(namespace: str, seed: int, split: str, purpose: str) -> int:
    """A 64-bit key for a counter-based random stream of ``(seed, split)`` (e.g. minibatches)."""
    return _hash64(namespace, purpose, int(seed), split)
