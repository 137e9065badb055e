"""The progress bars: ``track`` steps a bar once per item, after the loop body ran."""

from __future__ import annotations

import io

from l2l import progress
from l2l.progress import track


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_track_steps_after_each_body_and_closes(monkeypatch):
    events: list[str] = []
    update, close = progress.Progress.update, progress.Progress.close
    monkeypatch.setattr(progress.Progress, "update",
                        lambda self, n=1, **i: (events.append(f"step {n}"), update(self, n, **i)))
    monkeypatch.setattr(progress.Progress, "close",
                        lambda self: (events.append("close"), close(self)))
    stream = _Terminal()
    for item in track(["sgd", "adam"], "baselines", stream=stream):
        events.append(item)
    assert events == ["sgd", "step 1", "adam", "step 1", "close"]
    assert "baselines" in stream.getvalue() and "2/2" in stream.getvalue()
    events.clear()
    for item in track(["sgd", "adam"], "baselines", stream=stream):
        events.append(item)
        break
    assert events == ["sgd", "close"]  # a loop left early closes its bar too


def test_track_disabled_prints_nothing():
    stream = _Terminal()
    assert list(track(range(4), "quiet", enabled=False, stream=stream)) == [0, 1, 2, 3]
    assert stream.getvalue() == ""
