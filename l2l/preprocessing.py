"""Gradient preprocessing for the learned optimizer (Andrychowicz et al., 2016, appendix A).

Gradients span many orders of magnitude, which an LSTM handles badly; the paper feeds each
coordinate ``x`` as two features::

    (log|x| / p, sign(x))   if |x| >= exp(-p)
    (-1, exp(p) * x)        otherwise

The official code uses ``p = 5`` and clamps both features to [-1, 1] ("log_sign_clamped").
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

PREPROCESSINGS = ("log_sign", "log_sign_clamped", "none")


def num_features(kind: str) -> int:
    """How many input features per coordinate ``kind`` produces."""
    check_preprocessing(kind)
    return 1 if kind == "none" else 2


def check_preprocessing(kind: str) -> None:
    if kind not in PREPROCESSINGS:
        raise ValueError(
            f"unknown preprocessing {kind!r}: choose one of {', '.join(PREPROCESSINGS)}"
        )


def preprocess(grads: Tensor, kind: str, p: float = 10.0) -> Tensor:
    """Features of shape ``grads.shape + (num_features(kind),)``.

    The unused branch of each ``where`` is kept finite (log of 1 instead of log of 0) so that
    second-order meta-gradients through a zero gradient are 0, not NaN.
    """
    if kind == "none":
        return grads.unsqueeze(-1)
    check_preprocessing(kind)
    magnitude = grads.abs()
    big = magnitude >= math.exp(-p)
    log_part = torch.where(big, magnitude, torch.ones_like(magnitude)).log() / p
    first = torch.where(big, log_part, torch.full_like(grads, -1.0))
    second = torch.where(big, torch.sign(grads), math.exp(p) * grads)
    features = torch.stack([first, second], dim=-1)
    if kind == "log_sign_clamped":
        features = features.clamp(-1.0, 1.0)
    return features
