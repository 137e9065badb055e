"""``python -m l2l.pretrained``: list the shipped pretrained optimizers and how each was made."""

from __future__ import annotations

from l2l.env.runtime import quiet_broken_pipe
from l2l.pretrained import INDEX, describe, entries, recommended


def main() -> None:
    found = entries()
    if not found:
        print(f"no pretrained optimizers ({INDEX} lists none)")
        return
    print(f"{len(found)} pretrained optimizer(s) in {INDEX.parent}")
    print("(a task is one meta-training iteration of N problems; costs are of the optimizer "
          "step alone, per parameter)\n")
    best = recommended()
    if best:
        print(f"recommended default: {best['name']}: {best['why']}\n")
    for record in found:
        print(describe(record) + "\n")
    print("use one: l2l.pretrained.load(name), or python train.py checkpoint=<name> ...")


if __name__ == "__main__":
    with quiet_broken_pipe():
        main()
