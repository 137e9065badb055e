"""``python -m l2l.pretrained``: list the shipped pretrained optimizers and how each was made."""

from __future__ import annotations

from l2l.pretrained import INDEX, describe, entries


def main() -> None:
    found = entries()
    if not found:
        print(f"no pretrained optimizers ({INDEX} lists none)")
        return
    print(f"{len(found)} pretrained optimizer(s) in {INDEX.parent}:\n")
    for record in found:
        print(describe(record) + "\n")
    print("use one: l2l.pretrained.load(name), or python train.py checkpoint=<name> ...")


if __name__ == "__main__":
    main()
