"""What a constructor accepts, read from its signature: the one reader of ``inspect.signature``.

Optimizers, learned architectures and task families are all configured by keyword (from a
config file or the command line), so the names a constructor takes are the valid keys and its
defaults are the config's defaults; reading them from the code keeps the two from drifting.
"""

from __future__ import annotations

import inspect
from typing import Any

EMPTY = inspect.Parameter.empty  #: the default of a parameter that has none


def keyword_parameters(cls: type) -> dict[str, Any]:
    """``{name: default}`` of the keyword-capable parameters of ``cls.__init__`` (``self``,
    ``*args`` and ``**kwargs`` left out; :data:`EMPTY` where there is no default)."""
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {name: p.default for name, p in inspect.signature(cls.__init__).parameters.items()
            if name != "self" and p.kind in kinds}


def defaults(cls: type) -> dict[str, Any]:
    """The parameters of ``cls.__init__`` that have a default, with it (tuples as lists, the
    form config files hold)."""
    return {name: list(value) if isinstance(value, tuple) else value
            for name, value in keyword_parameters(cls).items() if value is not EMPTY}
