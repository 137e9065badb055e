"""Experiment tracking: the one place the project talks to wandb.

:class:`RunLogger` always writes ``metrics.jsonl`` in the run directory (one JSON object per
:meth:`RunLogger.log` call), a record that needs no wandb. With ``backend="wandb"`` it also
mirrors everything into a wandb run whose files land in ``<run_dir>/wandb/``:

* mode ``offline`` (the default): nothing leaves the machine; ``wandb sync <dir>`` uploads
  the run later.
* mode ``online``: if wandb cannot start (server unreachable, not logged in, timeout), a
  warning says so and the run continues in offline mode. A run never hangs or dies because of
  wandb: every later wandb call that fails is reported as a warning and skipped.
* mode ``disabled``: wandb is not even imported.

A run directory keeps its wandb run: the first session stores the run id in
``<run_dir>/wandb_id.txt`` and every later session on the same directory (a resumed run) passes
it back to ``wandb.init(id=..., resume="allow")``, so a killed and resumed run is one wandb run,
not two.

wandb is imported lazily, only when a wandb run is actually started, so ``import l2l`` stays
fast and ``backend="none"`` never touches it.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from l2l.atomic import write_text
from l2l.report.cells import display_name, dumps, finite, jsonable
from l2l.tracking_files import (
    keep_wandb_files_in,
    row_event,
    row_step,
    scalar,
    wait_for_transaction_log,
)

if TYPE_CHECKING:
    from l2l.evaluation import EvaluationRecord, TuneResult

log = logging.getLogger(__name__)

MODES = ("offline", "online", "disabled")
BACKENDS = ("wandb", "none")
ID_FILE = "wandb_id.txt"


class TrackingWarning(UserWarning):
    """Something went wrong with wandb; the run goes on (metrics.jsonl is still written)."""


def default_mode() -> str:
    """``$WANDB_MODE`` if set, else ``"offline"`` (what the logger config defaults to)."""
    return os.environ.get("WANDB_MODE") or "offline"


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"unknown wandb mode {mode!r}; allowed: {', '.join(MODES)}")
    return mode


def _warn(message: str) -> None:
    warnings.warn(message, TrackingWarning, stacklevel=4)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


class RunLogger:
    """Metrics, curves, summaries and artifacts of one run: ``metrics.jsonl`` plus wandb.

    Use as a context manager (``with RunLogger(...) as logger:``) or call :meth:`finish`.

    Args:
        run_dir: the run's directory (created if missing); wandb files go to ``run_dir/wandb``.
        config: the run's configuration (plain values), stored with the wandb run.
        backend: ``"wandb"`` or ``"none"`` (no wandb at all).
        mode: ``"offline"``, ``"online"`` or ``"disabled"`` (see the module docstring).
        project, entity, group, tags, name, job_type: passed to ``wandb.init`` (``name`` is
            the run's ``run_name``).
        init_timeout: seconds ``wandb.init`` may take in online mode before falling back.
        settings: extra ``wandb.Settings`` fields (e.g. ``{"base_url": ...}``), override ours.
    """

    def __init__(
        self,
        run_dir: str | Path,
        config: Mapping[str, Any] | None = None,
        *,
        backend: str = "wandb",
        mode: str = "offline",
        project: str = "l2l",
        entity: str | None = None,
        group: str | None = None,
        tags: Iterable[str] = (),
        name: str | None = None,
        job_type: str | None = None,
        init_timeout: float = 30.0,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown logger backend {backend!r}; allowed: {', '.join(BACKENDS)}")
        check_mode(mode)
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.config = dict(config or {})
        self.backend = backend
        self.requested_mode = mode
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self._metrics = open(self.metrics_path, "a", encoding="utf-8")  # noqa: SIM115
        self._finished = False
        self.run: Any = None  #: the wandb run, or None
        if backend == "wandb" and mode != "disabled":
            self.run = self._start_wandb(
                mode,
                dict(project=project, entity=entity, group=group, tags=list(tags) or None,
                     name=name, job_type=job_type),
                init_timeout,
                dict(settings or {}),
            )

    # -- wandb start-up ------------------------------------------------------------------------

    def _start_wandb(self, mode: str, init_kwargs: dict, init_timeout: float,
                     extra_settings: dict) -> Any:
        try:
            import wandb
        except ImportError as exc:
            _warn(f"wandb is not installed ({exc}); logging to {self.metrics_path} only")
            return None
        self._wandb = wandb
        if mode == "online":
            try:
                run = self._init(mode, init_kwargs, extra_settings, init_timeout)
            except Exception as exc:  # unreachable server, not logged in, timeout, ...
                reason = _first_line(exc)
            else:
                if not (run.disabled or run.offline):
                    return run
                # wandb itself gave up on logging in (e.g. an unanswered prompt timed out)
                reason = f"wandb switched itself to {run.settings.mode!r} mode"
                self._guard("finish", run.finish)
            run = self._init_offline(init_kwargs, extra_settings, online_failure=reason)
            if run is not None:
                message = (f"wandb online init failed ({reason}); falling back to offline, sync "
                           f"later with `wandb sync {self.wandb_run_dir_of(run)}`")
                log.warning("%s", message)  # into train.log too, not only onto the console
                _warn(message)
            return run
        return self._init_offline(init_kwargs, extra_settings)

    def _init_offline(self, init_kwargs: dict, extra_settings: dict,
                      online_failure: str | None = None) -> Any:
        try:
            try:
                run = self._init("offline", init_kwargs, extra_settings, None)
            except Exception:
                if online_failure is None:
                    raise
                # wandb's service may still hold the id of the failed online attempt ("run ID
                # is in use"): this session's offline run then gets an id of its own
                import secrets

                run = self._init("offline", init_kwargs, extra_settings, None,
                                 run_id=secrets.token_hex(4))
        except Exception as exc:
            before = "" if online_failure is None else f"online init failed ({online_failure}), "
            _warn(f"wandb {before}offline init failed ({_first_line(exc)}); continuing without "
                  f"wandb, metrics in {self.metrics_path}")
            return None
        log.info("wandb offline run in %s; upload it with `wandb sync %s`",
                 self.wandb_run_dir_of(run), self.wandb_run_dir_of(run))
        return run

    def _init(self, mode: str, init_kwargs: dict, extra_settings: dict,
              init_timeout: float | None, run_id: str | None = None) -> Any:
        wandb = self._wandb
        keep_wandb_files_in(self.run_dir)
        fields: dict[str, Any] = {"silent": True, "console": "off"}
        if init_timeout is not None:
            # login_timeout bounds the interactive API-key prompt, if wandb shows one
            fields.update(init_timeout=float(init_timeout), login_timeout=float(init_timeout))
        fields.update(extra_settings)
        run = wandb.init(
            dir=str(self.run_dir),
            mode=mode,
            config=jsonable(self.config),
            settings=wandb.Settings(**fields),
            reinit="create_new",  # several loggers may live in one process (tests, sweeps)
            id=run_id or self.wandb_id(),
            resume="allow",  # the same run directory continues the same wandb run
            **init_kwargs,
        )
        return run

    def wandb_id(self) -> str:
        """This run directory's wandb run id: read from ``wandb_id.txt``, or made and stored
        there on first use, so that a resumed run logs into the run it started."""
        path = self.run_dir / ID_FILE
        if path.is_file():
            stored = path.read_text(encoding="utf-8").strip()
            if re.fullmatch(r"[A-Za-z0-9_-]+", stored):
                return stored
        import secrets

        new = secrets.token_hex(4)  # 8 characters, like wandb's own ids
        write_text(path, new + "\n")
        return new

    @staticmethod
    def wandb_run_dir_of(run: Any) -> Path | None:
        run_dir = getattr(run, "dir", None) if run is not None else None
        return Path(run_dir).parent if run_dir else None  # run.dir is <run folder>/files

    @property
    def wandb_run_dir(self) -> Path | None:
        """The wandb run's folder (``run_dir/wandb/offline-run-...``), or None without wandb."""
        return self.wandb_run_dir_of(self.run)

    @property
    def mode(self) -> str | None:
        """The wandb mode actually in use (``"online"``/``"offline"``), or None without wandb."""
        if self.run is None:
            return None
        return "offline" if self.run.offline else "online"

    def _guard(self, what: str, fn, *args, **kwargs) -> Any:
        """Call a wandb function; a failure becomes a warning, never an exception."""
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            _warn(f"wandb {what} failed ({_first_line(exc)}); continuing")
            return None

    # -- logging -------------------------------------------------------------------------------

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        """Record ``metrics`` at ``step``: a line of metrics.jsonl, and a wandb history row."""
        if self._finished:
            raise RuntimeError("RunLogger.log called after finish()")
        values = {str(k): scalar(v) for k, v in metrics.items()}
        self._metrics.write(dumps({"step": int(step), **values}) + "\n")
        self._metrics.flush()
        if self.run is not None:
            self._guard("log", self.run.log, values, step=int(step))

    def drop_steps_after(self, step: int) -> int:
        """Remove metrics.jsonl rows logged after ``step`` (a resume from a checkpoint at
        ``step`` replays them: without this they would appear twice). Returns how many."""
        return self._drop(lambda line: row_step(line) > step)

    def drop_events(self, event: str) -> int:
        """Remove metrics.jsonl rows of ``event`` (e.g. ``"tune"``) that an interrupted earlier
        attempt of this run logged: the rerun logs them again. Returns how many."""
        return self._drop(lambda line: row_event(line) == event)

    def _drop(self, dropped: Callable[[str], bool]) -> int:
        self._metrics.flush()
        lines = self.metrics_path.read_text(encoding="utf-8").splitlines(keepends=True)
        keep = [line for line in lines if not dropped(line)]
        if len(keep) != len(lines):
            with open(self.metrics_path, "r+", encoding="utf-8") as handle:
                handle.writelines(keep)
                handle.truncate()
        return len(lines) - len(keep)

    def log_curves(self, entries: Iterable[EvaluationRecord], key: str = "eval/loss") -> None:
        """Overlay the optimizers' mean curves (learned vs classic) in one wandb chart.

        Logs ``<key>_curves`` (a ``wandb.plot.line_series`` of loss vs step) and ``<key>_table``
        (a table of ``(optimizer, step, <value>)`` rows). Does nothing without wandb.
        """
        if self.run is None:
            return
        entries = list(entries)
        names = [display_name(e, i) for i, e in enumerate(entries)]
        curves = [[finite(v) for v in e.mean_curve] for e in entries]
        value = key.rsplit("/", 1)[-1] or "value"

        def build_and_log() -> None:
            wandb = self._wandb
            plot = wandb.plot.line_series(
                xs=[list(range(len(c))) for c in curves], ys=curves, keys=names,
                title=f"{key}: mean over held-out instances", xname="step")
            rows = [[n, t, v] for n, c in zip(names, curves) for t, v in enumerate(c)]
            table = wandb.Table(columns=["optimizer", "step", value], data=rows)
            self.run.log({f"{key}_curves": plot, f"{key}_table": table})

        self._guard("log_curves", build_and_log)

    def log_evaluation(self, records: Sequence[EvaluationRecord]) -> None:
        """A finished evaluation in wandb: the optimizers' curves (:meth:`log_curves`), their
        tuning grids (:meth:`log_tuning_curves`) and each one's final loss in the summary."""
        self.log_curves(records)
        self.log_tuning_curves(records)
        for record in records:
            self.summary({f"eval/{record.name}/final_loss": record.final_loss_mean,
                          f"eval/{record.name}/final_loss_ci95": record.final_loss_ci95})

    def log_tuning(self, name: str, tuning: TuneResult) -> None:
        """Record a learning-rate search (:meth:`l2l.evaluation.TuneResult.to_json`): one line
        ``{"event": "tune", "optimizer": name, "grid": ..., "scores": ...}`` in metrics.jsonl
        (no ``step``: tuning is not a point of meta-training) and the best lr, its validation
        loss and whether it sits at a grid edge in the wandb summary. The grids are drawn in
        wandb at the end of the run (:meth:`log_tuning_curves`), where they cannot upset the
        history's step order."""
        if self._finished:
            raise RuntimeError("RunLogger.log_tuning called after finish()")
        self._metrics.write(dumps({"event": "tune", "optimizer": name, **tuning.to_json()})
                            + "\n")
        self._metrics.flush()
        best = finite(min(tuning.scores, default=None))
        self.summary({f"tune/{name}/lr": tuning.best_lr if best is not None else None,
                      f"tune/{name}/best_val_final_loss": best,
                      f"tune/{name}/edge": tuning.edge or "none"})

    def log_tuning_curves(self, entries: Iterable[EvaluationRecord]) -> None:
        """Overlay every tuned optimizer's validation loss vs learning rate in one wandb chart
        (``tune/val_loss_curves``) plus the ``tune/val_loss_table`` of ``(optimizer, lr,
        loss)`` rows; a diverged lr is a missing point. Does nothing without wandb."""
        tuned = [(display_name(e, i), e.tuning) for i, e in enumerate(entries) if e.tuning]
        if self.run is None or not tuned:
            return

        def build_and_log() -> None:
            wandb = self._wandb
            xs = [list(t.grid) for _, t in tuned]
            ys = [[finite(v) for v in t.scores] for _, t in tuned]
            plot = wandb.plot.line_series(xs=xs, ys=ys, keys=[n for n, _ in tuned],
                                          title="final validation loss vs learning rate",
                                          xname="learning rate")
            rows = [[n, lr, finite(v)] for n, t in tuned for lr, v in zip(t.grid, t.scores)]
            table = wandb.Table(columns=["optimizer", "lr", "val_final_loss"], data=rows)
            self.run.log({"tune/val_loss_curves": plot, "tune/val_loss_table": table})

        self._guard("log_tuning_curves", build_and_log)

    def summary(self, values: Mapping[str, Any]) -> None:
        """Set final values in the wandb run's summary (no file of ours)."""
        if self.run is not None:
            self._guard("summary", self.run.summary.update,
                        {str(k): scalar(v) for k, v in values.items()})

    def log_artifact(self, path: str | Path, name: str, type: str = "model",
                     metadata: Mapping[str, Any] | None = None) -> None:
        """Attach a file (or folder) to the wandb run as an artifact; a no-op without wandb."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no artifact file at {path}")
        if self.run is None:
            return
        artifact_name = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "artifact"

        def build_and_log() -> None:
            artifact = self._wandb.Artifact(artifact_name, type=type,
                                            metadata=jsonable(dict(metadata or {})))
            if path.is_dir():
                artifact.add_dir(str(path))
            else:
                artifact.add_file(str(path))
            self.run.log_artifact(artifact)

        self._guard("log_artifact", build_and_log)

    # -- the end ---------------------------------------------------------------------------------

    def finish(self, exit_code: int | None = None) -> None:
        """Close metrics.jsonl and the wandb run; safe to call more than once."""
        if self._finished:
            return
        self._finished = True
        self._metrics.close()
        if self.run is not None:
            self._guard("finish", self.run.finish, exit_code=exit_code)
            wait_for_transaction_log(self.wandb_run_dir)

    @property
    def finished(self) -> bool:
        return self._finished

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.finish(exit_code=None if exc_type is None else 1)
        return False
