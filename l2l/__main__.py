"""``python -m l2l``: every optimizer l2l knows, hand-designed and learned, with its defaults."""

from l2l.registry import describe

print(describe())
