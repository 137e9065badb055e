"""The README and docs/ cannot drift from the code: links resolve, commands are valid, the API
example runs.

Every relative link (and its ``#anchor``) in README.md and docs/**/*.md must point at a file and
heading that exist. Every command of a ```bash block is parsed by bash itself (variables, loops,
quotes and continuations as a reader's shell would), with ``python``, ``torchrun`` and ``pip``
replaced by functions that only record their arguments; then each ``python train.py ...`` is
composed with Hydra exactly as train.py composes it (a sweep ``-m`` as each swept value's first
choice) and put through the checks train.py runs before any work. Paths under ``runs/`` do not
exist in a fresh clone, so a command naming one is checked for config validity only; any other
path a command names (``docs/results/...``) must exist. ``python -m``, ``python script.py`` and
their ``--flags`` must exist. The demo command itself runs smoke-sized in
tests/test_train.py (``test_compare_end_to_end_with_wandb_offline``).
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
README_MAX_LINES = 300

FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
#: python, torchrun and pip record their argv (fields \x1f, records \x1e) instead of running
SHELL_STUBS = r"""
_record() { printf '%s\x1f' "$@" >> "$DOCS_ARGV"; printf '\x1e' >> "$DOCS_ARGV"; }
python() { _record python "$@"; }
python3() { _record python "$@"; }
torchrun() { _record torchrun "$@"; }
pytest() { _record pytest "$@"; }
pip() { :; }
wandb() { :; }
. () { :; }
set -u
"""


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def blocks(page: Path, language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(page.read_text()) if lang == language]


def _outside_code(text: str) -> str:
    return FENCE.sub("", text)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = unicodedata.normalize("NFC", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {slug(h) for h in re.findall(r"^#+ (.+)$", _outside_code(page.read_text()), re.M)}


# -- (a) links ---------------------------------------------------------------------------------


def broken_links(pages: list[Path]) -> list[str]:
    broken = []
    for page in pages:
        for target in LINK.findall(_outside_code(page.read_text())):
            if re.match(r"[a-z]+:", target):  # https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                broken.append(f"{page}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                broken.append(f"{page}: {target} (no such heading)")
    return broken


def test_every_relative_link_and_anchor_resolves():
    broken = broken_links(PAGES)
    assert not broken, "\n".join(broken)


def test_a_broken_link_or_anchor_is_caught(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Top: the `one`, here\n\n[ok](#top-the-one-here) [a](nope.md) "
                    "[b](#nowhere) ![c](fig.png)\n```bash\n# not a heading\n```\n")
    assert [b.split(": ", 1)[1] for b in broken_links([page])] == [
        "nope.md (no such file)", "#nowhere (no such heading)", "fig.png (no such file)"]


def test_docs_index_lists_every_page():
    index = (ROOT / "docs" / "index.md").read_text()
    outputs = ROOT / "docs" / "results"  # docs/results/<run>/**/*.md are a run's own output
    pages = [p for p in (ROOT / "docs").rglob("*.md")
             if not (outputs in p.parents and p.parent != outputs) and p.name != "index.md"]
    missing = [_rel(p) for p in pages if f"({p.relative_to(ROOT / 'docs')})" not in index]
    assert not missing, f"docs/index.md does not list {missing}"


# -- (d) the README is a front door -----------------------------------------------------------


def test_readme_is_at_most_300_lines():
    lines = (ROOT / "README.md").read_text().count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines: move detail into docs/"


def test_readme_test_command_is_the_one_ci_runs():
    """.ci/run runs the README's test command verbatim, so a missing install step fails in CI."""
    (command,) = [b.strip() for b in blocks(ROOT / "README.md", "bash") if "pytest" in b]
    assert command in (ROOT / ".ci" / "run").read_text().splitlines()


# -- (b, c) commands ----------------------------------------------------------------------------


def recorded_commands(block: str, tmp_path: Path) -> list[list[str]]:
    """The argv of every python/torchrun/pytest call of a bash block, as bash parses it."""
    out = tmp_path / "argv"
    out.write_bytes(b"")
    proc = subprocess.run(["bash", "-c", SHELL_STUBS + block + "\nwait\n"], cwd=ROOT,
                          env={"DOCS_ARGV": str(out), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=20)
    assert proc.returncode == 0, f"bash cannot run the block:\n{block}\n{proc.stderr}"
    records = out.read_bytes().decode().split("\x1e")
    return [r.split("\x1f")[:-1] for r in records if r]


def all_commands(pages: list[Path], tmp_path: Path) -> Iterator[tuple[str, list[str]]]:
    for page in pages:
        for block in blocks(page, "bash"):
            for argv in recorded_commands(block, tmp_path):
                yield _rel(page), argv


def first_choice(value: str) -> str:
    """A sweep value ``a,b,c`` -> ``a``; commas inside [...] or {...} are not sweep commas."""
    depth = 0
    for i, char in enumerate(value):
        depth += char in "[{("
        depth -= char in "]})"
        if char == "," and depth == 0:
            return value[:i]
    return value


def in_clone(spec: str) -> bool | None:
    """Does a path a command names exist in a fresh clone? None: a run's output (runs/...)."""
    if spec.startswith("runs/") or "/runs/" in spec:
        return None
    return (ROOT / spec).exists()


def check_train_overrides(args: list[str]) -> None:
    """Compose ``python train.py <args>`` as train.py does and run the checks it runs before any
    work (train.checked_run): a bad key, value, optimizer, task or path raises."""
    from l2l import pretrained
    from l2l.checkpoint import load as load_checkpoint_file
    from l2l.config_checks import check_config
    from l2l.modes import MODES
    from l2l.presets import checkpoint_specs, parse_variants, variant_config
    from l2l.registry import is_learned
    from l2l.run_config import meta_config, plain, study_optimizer
    from l2l.tasks import build_task

    multirun = any(a in ("-m", "--multirun") for a in args)
    overrides = [a for a in args if not a.startswith("-")]
    if multirun:
        overrides = [k + "=" + first_choice(v) if sep else k
                     for k, sep, v in (o.partition("=") for o in overrides)]
    cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    OmegaConf.resolve(cfg.hydra)  # run and sweep directories, launcher settings
    with open_dict(cfg):
        del cfg["hydra"]  # the run's config, as train.py's main() receives it
    assert cfg.mode in MODES, cfg.mode
    check_config(cfg)
    build_task(cfg.task.family, **plain(cfg.task.kwargs))
    learned = is_learned(cfg.optimizer.name)
    study_optimizer(cfg)
    assert not any(is_learned(name) for name in cfg.eval.baselines), cfg.eval.baselines
    if cfg.mode in ("meta_train", "compare") and learned:
        meta_config(cfg)
    assert cfg.mode != "meta_train" or learned, "meta_train needs a learned optimizer"
    assert cfg.checkpoint is None or learned, "checkpoint= with a hand-designed optimizer"
    assert cfg.mode != "evaluate" or not learned or cfg.checkpoint is not None
    _check_checkpoint(cfg.checkpoint, pretrained)
    if cfg.get("resume_from") is not None:
        assert cfg.mode in ("meta_train", "compare") and learned
        if _exists(cfg.resume_from):
            assert "meta_config" in load_checkpoint_file(cfg.resume_from)
    if cfg.mode in ("generalization", "suite"):
        for spec, _ in checkpoint_specs(cfg):
            _check_checkpoint(spec, pretrained)
    if cfg.mode == "generalization":
        for variant in parse_variants(cfg):
            vcfg = variant_config(cfg, variant)
            build_task(vcfg.task.family, **plain(vcfg.task.kwargs))


def _exists(path: str) -> bool:
    found = in_clone(path)
    assert found is not False, f"{path} does not exist in a fresh clone"
    return bool(found)


def _check_checkpoint(spec: str | None, pretrained) -> None:
    if spec is None:
        return
    if "/" not in spec and not spec.endswith(".pt"):
        pretrained.resolve(spec)  # a zoo name
    elif _exists(spec):
        pretrained.resolve(spec)


def check_script(argv: list[str]) -> None:
    """``python path.py --flag ...``: the file exists and defines every flag used."""
    script = ROOT / argv[0]
    assert script.is_file(), f"{argv[0]} does not exist"
    source = script.read_text()
    for arg in argv[1:]:
        if arg == "--":  # scripts/train_zoo.py NAME -- <train.py overrides>
            check_train_overrides(argv[argv.index("--") + 1:])
            return
        flag = arg.split("=", 1)[0]
        if flag.startswith("--"):
            assert f'"{flag}"' in source, f"{argv[0]} has no option {flag}"


def check_command(argv: list[str]) -> None:
    program, args = argv[0], argv[1:]
    if program == "pytest":
        return
    if program == "torchrun":
        args = args[next(i for i, a in enumerate(args) if a.endswith(".py")):]
    if args[:1] == ["-m"]:
        module = args[1]
        assert module in ("venv", "pytest") or importlib.util.find_spec(module), module
    elif args[:1] == ["train.py"]:
        check_train_overrides(args[1:])
    elif args and args[0].endswith(".py"):
        check_script(args)
    else:
        raise AssertionError(f"a python command that is neither -m, train.py nor a script: {argv}")


RESULT_PAGES = [p for p in PAGES if p.parent == ROOT / "docs" / "results"]
HOWTO_PAGES = [p for p in PAGES if p not in RESULT_PAGES]


def check_commands(pages: list[Path], tmp_path: Path, monkeypatch, at_least: int) -> None:
    monkeypatch.chdir(ROOT)  # the docs' commands run from the repository root
    commands = list(all_commands(pages, tmp_path))
    assert sum(argv[1:2] == ["train.py"] for _, argv in commands) >= at_least, "none found"
    failures = []
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        for page, argv in commands:
            try:
                check_command(argv)
            except Exception as error:  # noqa: BLE001 - every bad command is listed at once
                failures.append(f"{page}: {' '.join(argv)}\n    {type(error).__name__}: {error}")
    assert not failures, "\n".join(failures)


@pytest.mark.slow  # composes every preset/command (Hydra: ~0.2 s each)
def test_every_command_of_the_readme_and_the_usage_pages_is_valid(tmp_path, monkeypatch):
    check_commands(HOWTO_PAGES, tmp_path, monkeypatch, at_least=15)


@pytest.mark.slow  # ~25 long commands, a Hydra composition each (~0.2-0.5 s)
def test_every_command_of_the_results_pages_is_valid(tmp_path, monkeypatch):
    check_commands(RESULT_PAGES, tmp_path, monkeypatch, at_least=15)


def test_a_bad_documented_command_is_caught(tmp_path):
    """The checker is not vacuous: a typo in a key, a value or a docs path fails."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        for args in (["meta.itertions=3"], ["optimizer=adamw"], ["eval.instances=0"],
                     ["mode=evaluate", "checkpoint=docs/results/nope.pt"],
                     ["mode=meta_train", "optimizer=adam"]):
            with pytest.raises(Exception):  # noqa: B017 - any of the errors train.py raises
                check_train_overrides(args)
    with pytest.raises(AssertionError, match="no option --nope"):
        check_script(["benchmarks/bench_dropin.py", "--nope", "1"])
    (argv,) = recorded_commands('M=docs/results\npython train.py "checkpoints=[$M/a.pt]"',
                                tmp_path)
    assert argv == ["python", "train.py", "checkpoints=[docs/results/a.pt]"]
    with pytest.raises(AssertionError, match="cannot run"):  # an undefined variable
        recorded_commands("python train.py checkpoint=$UNDEFINED", tmp_path)


# -- (e) the API example ----------------------------------------------------------------------


def test_readme_api_example_runs(monkeypatch):
    monkeypatch.setenv("L2L_FUSED_COMPILE", "0")  # no compile on a shared test machine
    (example,) = [b for b in blocks(ROOT / "README.md", "python") if "TorchOptimizer" in b]
    namespace: dict = {}
    exec(compile(example, "README.md", "exec"), namespace)  # noqa: S102 - the README's own code
    assert namespace["params"].shape == (16, 10)
    assert isinstance(namespace["opt"], __import__("torch").optim.Optimizer)


def test_every_python_block_of_the_docs_compiles():
    for page in PAGES:
        for block in blocks(page, "python"):
            compile(block, str(page), "exec")
