"""The walk a reader takes through the code of one ``train.py`` run: files entered, moves, climbs.

    python scripts/call_walk.py [ROOT] [--depth N] -- <train.py overrides>

Runs ``ROOT/train.py`` with the overrides under a profiler and, from train.py's ``run()`` on,
follows the calls between the repository's own files (``train.py``, ``l2l/``, ``baselines/``;
module imports left out) depth first, the way a reader follows them: each call from one file into
a function of another is walked the first time it happens and never again. Along that
walk (``--depth N``: only N calls deep, counted in files, below train.py):

* a *move* is a call into another file (the reader opens the callee);
* a *climb* is the return from it into the caller's file (the reader goes back up to continue);
* a file's *entries* count both: how often the reader arrives in it.

Printed: the files entered, the moves and climbs, each file's entries (highest first) and the
walk itself. A file entered many times is one the flow keeps leaving and coming back to.
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
    if "--depth" in head:
        at = head.index("--depth")
        depth_limit = int(head[at + 1])
        del head[at:at + 2]
    root = Path(head[0] if head else Path(__file__).resolve().parents[1]).resolve()
    overrides = argv[split + 1:]
    sys.path.insert(0, str(root))
    own = (str(root / "l2l") + os.sep, str(root / "baselines") + os.sep)
    train = str(root / "train.py")

    def ours(filename: str) -> str | None:
        if filename == train or filename.startswith(own):
            return os.path.relpath(filename, root)
        return None

    walked: set[tuple[str, str, int]] = set()
    #: per frame: (our file, or the caller's for a frame outside the repository; whether the
    #: frame lies on the walk; whether entering it was a move)
    stack: list[tuple[str | None, bool, bool, int]] = []
    walk: list[tuple[str, str, str]] = []  # (kind, from, to)

    def profile(frame, event, arg):  # noqa: ANN001 - sys.setprofile's signature
        if event == "call":
            code = frame.f_code
            if not stack and not (code.co_filename == train and code.co_name == "run"):
                return  # the walk starts at train.py's run(), after Hydra composed the config
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
    entries = Counter(to.split(":")[0] for _, _, to in walk)
    entries[os.path.relpath(train, root)] += 1  # where the reader starts
    moves = sum(k == "move" for k, _, _ in walk)
    climbs = sum(k == "climb" for k, _, _ in walk)
    limit = f" (depth {depth_limit})" if depth_limit < 10**9 else ""
    print(f"walk of train.py {' '.join(overrides)}{limit}")
    print(f"files entered: {len(entries)}; moves: {moves}; climbs back up: {climbs}; "
          f"most entries: {max(entries.values())}")
    print("entries per file: " + ", ".join(f"{f} {n}" for f, n in entries.most_common()))
    print("walk:")
    for kind, source, target in walk:
        print(f"  {kind:5} {source} -> {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
