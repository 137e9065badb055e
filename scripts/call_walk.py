"""The walk a reader takes through the code of one ``train.py`` run: files entered, moves, climbs.

    python scripts/call_walk.py [ROOT] [--depth N] [--start FILE:FUNCTION] -- <train.py overrides>

Runs ``ROOT/train.py`` with the overrides under a profiler and, from train.py's ``run()`` on
(``--start l2l/modes/compare.py:run``: from the first call of that function instead), follows the
calls between the repository's own files (``train.py``, ``l2l/``, ``baselines/``; module imports
left out) depth first, the way a reader follows them: each call from one file into a function of
another is walked the first time it happens and never again. Along that walk (``--depth N``: only
N calls deep, counted in files, below the start):

* a *move* is a call into another file (the reader opens the callee);
* a *climb* is the return from it into the caller's file (the reader goes back up to continue).

A file's entries are counted two ways, both printed:

* *strict*: moves and climbs alike, every arrival in the file, returns included. A file that
  calls ten helpers elsewhere is entered ten more times by their returns;
* *by call*: moves only, the arrivals from a call in another file (the start counts one). This
  is how often the reader has to open the file anew; returns to a file still open are not counted.

Printed: the files entered, the moves and climbs, each file's entries (highest first) in both
counts and the walk itself. A file entered many times is one the flow keeps leaving and coming
back to.
"""

from __future__ import annotations

import os
import runpy
import sys
from collections import Counter
from pathlib import Path


def main(argv: list[str]) -> int:
    split = argv.index("--") if "--" in argv else len(argv)
    head = argv[:split]
    depth_limit = 10**9
    start: tuple[str, str] | None = None
    for option in ("--depth", "--start"):
        if option in head and head.index(option) + 1 == len(head):
            print(f"call_walk: {option} needs a value: give e.g. --depth 2 or --start "
                  "l2l/modes/compare.py:run", file=sys.stderr)
            return 2
    if "--depth" in head:
        at = head.index("--depth")
        if not head[at + 1].isdigit() or int(head[at + 1]) < 1:
            print(f"call_walk: --depth {head[at + 1]} is not a positive whole number of files: "
                  "give e.g. --depth 2", file=sys.stderr)
            return 2
        depth_limit = int(head[at + 1])
        del head[at:at + 2]
    if "--start" in head:
        at = head.index("--start")
        file, _, function = head[at + 1].rpartition(":")
        if not file or not function:
            print(f"call_walk: --start {head[at + 1]} is not FILE:FUNCTION: give e.g. "
                  "--start l2l/modes/compare.py:run", file=sys.stderr)
            return 2
        start = (file, function)
        del head[at:at + 2]
    root = Path(head[0] if head else Path(__file__).resolve().parents[1]).resolve()
    overrides = argv[split + 1:]
    sys.path.insert(0, str(root))
    own = (str(root / "l2l") + os.sep, str(root / "baselines") + os.sep)
    train = str(root / "train.py")
    start_file, start_function = (str(root / start[0]), start[1]) if start else (train, "run")
    if not Path(start_file).is_file():
        print(f"call_walk: --start names {start_file}, which is not a file: give a path "
              "relative to ROOT", file=sys.stderr)
        return 2

    def ours(filename: str) -> str | None:
        if filename == train or filename.startswith(own):
            return os.path.relpath(filename, root)
        return None

    walked: set[tuple[str, str, int]] = set()
    #: per frame: (our file, or the caller's for a frame outside the repository; whether the
    #: frame lies on the walk; whether entering it was a move)
    stack: list[tuple[str | None, bool, bool, int]] = []
    walk: list[tuple[str, str, str]] = []  # (kind, from, to)
    started = [False]

    def profile(frame, event, arg):  # noqa: ANN001 - sys.setprofile's signature
        if event == "call":
            code = frame.f_code
            if not stack:
                if started[0] or not (code.co_filename == start_file
                                      and code.co_name == start_function):
                    return  # the walk starts at its function (train.py's run(): after Hydra)
                started[0] = True
            caller, on_walk, _, depth = stack[-1] if stack else (None, True, False, 0)
            here = None if code.co_name == "<module>" else ours(code.co_filename)  # no imports
            move = False
            if here is not None and caller is not None and here != caller:
                edge = (caller, here, code.co_firstlineno)
                depth += 1
                move = on_walk and edge not in walked and depth <= depth_limit
                on_walk = move
                if move:
                    walked.add(edge)
                    walk.append(("move", caller, f"{here}:{code.co_name}"))
            stack.append((here or caller, on_walk, move, depth))
        elif event == "return" and stack:
            here, _, move, _ = stack.pop()
            if move:
                walk.append(("climb", f"{here}:{frame.f_code.co_name}", stack[-1][0]))

    sys.argv = [train, *overrides]
    sys.setprofile(profile)
    try:
        runpy.run_path(train, run_name="__main__")
    except SystemExit:
        pass
    finally:
        sys.setprofile(None)
    if not started[0]:
        print(f"call_walk: {start_function}() of {os.path.relpath(start_file, root)} was never "
              "called in this run: check --start and the overrides", file=sys.stderr)
        return 2
    first = os.path.relpath(start_file, root)
    strict = Counter(to.split(":")[0] for _, _, to in walk)
    strict[first] += 1  # where the reader starts
    by_call = Counter(to.split(":")[0] for kind, _, to in walk if kind == "move")
    by_call[first] += 1
    moves = sum(k == "move" for k, _, _ in walk)
    climbs = sum(k == "climb" for k, _, _ in walk)
    limit = f" (depth {depth_limit})" if depth_limit < 10**9 else ""
    origin = f" from {first}:{start_function}" if start else ""
    print(f"walk of train.py {' '.join(overrides)}{origin}{limit}")
    print(f"files entered: {len(strict)}; moves: {moves}; climbs back up: {climbs}; "
          f"most entries: {max(strict.values())} ({_most(strict)})")
    print("entries per file: " + ", ".join(f"{f} {n}" for f, n in strict.most_common()))
    print(f"by call: files entered: {len(by_call)}; moves: {moves}; "
          f"most entries: {max(by_call.values())} ({_most(by_call)}); "
          f"files entered more than twice: {sum(n > 2 for n in by_call.values())}")
    print("entries by call per file: "
          + ", ".join(f"{f} {n}" for f, n in by_call.most_common()))
    print("walk:")
    for kind, source, target in walk:
        print(f"  {kind:5} {source} -> {target}")
    return 0


def _most(entries: Counter) -> str:
    """The files entered most often, in the order they were first entered."""
    top = max(entries.values())
    return ", ".join(f for f, n in entries.items() if n == top)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
