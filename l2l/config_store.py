"""Every optimizer's defaults as a Hydra config, built from its class: defined once, in code.

``conf/optimizer/<name>.yaml`` only documents the optimizer and states what differs from its
class defaults; its defaults list pulls ``/optimizer_defaults/<name>`` -- registered here from the
constructor's signature -- so a dataclass default is never repeated in a yaml (and a yaml cannot
drift from the code), while every hyperparameter stays overridable on the command line
(``optimizer.hyperparameters.lr=0.1``) without Hydra's ``+``.
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from l2l.registry import optimizer_defaults, optimizers


def register_configs() -> None:
    """Register ``optimizer_defaults/<name>`` for every optimizer (idempotent). Called by
    whatever composes ``conf/`` (train.py, scripts, the tests) before it composes."""
    store = ConfigStore.instance()
    for name in optimizers():
        store.store(group="optimizer_defaults", name=name, node=optimizer_defaults(name))
