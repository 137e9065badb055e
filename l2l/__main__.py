"""``python -m l2l``: every optimizer l2l knows, hand-designed and learned, with its defaults."""

from l2l.registry import describe
from l2l.runtime import quiet_broken_pipe

with quiet_broken_pipe():
    print(describe())
