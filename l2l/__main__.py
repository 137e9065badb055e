"""``python -m l2l``: every optimizer l2l knows, hand-designed and learned, with its defaults."""

from l2l.env.runtime import quiet_broken_pipe
from l2l.registry import describe

with quiet_broken_pipe():
    print(describe())
