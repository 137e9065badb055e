"""``python train.py --help`` rendered from conf/ alone, without torch or Hydra's composition.

Hydra's own app help composes the config and asks its config loader for every group's options,
and each ask deep-copies the whole ConfigStore (every optimizer's defaults): seconds of CPU for
a page of text, on top of importing torch to register those defaults. The groups and their
options are the conf/ tree itself, so listing it gives the same page in a fraction of a second.
The page's text stays in one place, ``hydra.help.template`` in conf/config.yaml, in Hydra's
template syntax. The composed config (Hydra's ``$CONFIG``) is not on the page: the page points to
``--cfg job``, which composes it with the user's overrides, as ``--help`` did.
"""

from __future__ import annotations

import string
import sys
from collections.abc import Sequence
from pathlib import Path

#: the flags that ask Hydra for the app's help (``--hydra-help`` is Hydra's own, left to Hydra)
HELP_FLAGS = ("--help", "-h")


def config_groups(conf_dir: Path) -> dict[str, list[str]]:
    """Every app config group under ``conf_dir`` (``hydra/...`` excluded, as Hydra's help does)
    with its sorted options: the stems of the group folder's yaml files."""
    groups: dict[str, list[str]] = {}
    for path in conf_dir.rglob("*.yaml"):
        group = path.parent.relative_to(conf_dir).as_posix()
        if group == "." or group == "hydra" or group.startswith("hydra/"):
            continue
        groups.setdefault(group, []).append(path.stem)
    return {group: sorted(options) for group, options in sorted(groups.items())}


def render(conf_dir: Path) -> str:
    """The help page: conf/config.yaml's ``hydra.help.template`` with its config groups filled in
    the way Hydra formats ``$APP_CONFIG_GROUPS`` (one ``group: a, b, c`` line per group)."""
    import yaml  # only here: the page needs no more than a plain YAML read of one file

    config = yaml.safe_load((conf_dir / "config.yaml").read_text())
    template = config["hydra"]["help"]["template"]
    groups = "".join(f"{group}: {', '.join(options)}\n"
                     for group, options in config_groups(conf_dir).items())
    return string.Template(template).substitute(APP_CONFIG_GROUPS=groups)


def exit_with_help_if_asked(argv: Sequence[str], conf_dir: Path) -> None:
    """Print the help page on stdout and exit 0 when ``argv`` asks for it; otherwise return."""
    if any(arg in HELP_FLAGS for arg in argv):
        print(render(conf_dir))
        sys.exit(0)
