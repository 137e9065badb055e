"""Print the import graph of the ``l2l`` package: floors, back-up arrows and circles.

    python scripts/import_graph.py [ROOT]      # ROOT: the repository (default: this one)

Pure ``ast``: no module is imported, so it runs on any checkout without its dependencies.
Every ``import l2l.x`` / ``from l2l.x import y`` / ``from . import y`` inside ``l2l/`` is an
arrow from the importing module to the imported one (a package's arrows are those of its
``__init__``; an import of a package's name counts as an arrow to its ``__init__``; imports
inside functions count too, since they are dependencies all the same; imports under
``if TYPE_CHECKING:`` do not, since they exist only for annotations and never run).

* floors: the modules in topological layers, floor 0 importing nothing of l2l's, each floor
  importing only from the floors below it (the strongly connected parts of the graph are
  collapsed first, so a circle sits on one floor);
* back-up arrows: imports from a module to one on a higher floor, which only a circle makes
  possible;
* circles: the strongly connected sets of more than one module (or a module importing itself).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(root: Path, path: Path, modules: set[str]) -> set[str]:
    """The l2l modules that ``path`` imports (resolved to modules that exist)."""
    name = module_name(root, path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def add(target: str) -> None:
        while target and target not in modules:  # l2l.x.y where y is a name in l2l.x
            target = target.rpartition(".")[0]
        if target and target != name:
            found.add(target)

    tree = ast.parse(path.read_text(), str(path))
    type_only = {id(inner) for node in ast.walk(tree)
                 if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING"
                 for stmt in node.body for inner in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "l2l":
                    add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] != "l2l":
                continue
            for alias in node.names:
                full = f"{source}.{alias.name}"
                add(full if full in modules else source)
    return found


def graph(root: Path) -> dict[str, set[str]]:
    files = sorted((root / "l2l").rglob("*.py"))
    modules = {module_name(root, f) for f in files}
    return {module_name(root, f): imports_of(root, f, modules) for f in files}


def strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    parts: list[list[str]] = []
    counter = 0
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                part = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    part.append(member)
                    if member == node:
                        break
                parts.append(sorted(part))
    return parts


def floors(edges: dict[str, set[str]]) -> tuple[dict[str, int], list[list[str]]]:
    parts = strongly_connected(edges)
    part_of = {m: i for i, part in enumerate(parts) for m in part}
    level: dict[int, int] = {}
    for i, part in enumerate(parts):  # Tarjan emits a part after every part it reaches
        below = {part_of[t] for m in part for t in edges[m]} - {i}
        level[i] = 1 + max((level[j] for j in below), default=-1)
    return {m: level[part_of[m]] for m in edges}, [p for p in parts if len(p) > 1]


def main(argv: list[str]) -> int:
    root = Path(argv[0] if argv else Path(__file__).resolve().parents[1]).resolve()
    edges = graph(root)
    floor, circles = floors(edges)
    top = max(floor.values(), default=0)
    print(f"l2l import graph of {root}: {len(edges)} modules, "
          f"{sum(map(len, edges.values()))} arrows, {top + 1} floors")
    for level in range(top + 1):
        names = sorted(m for m in edges if floor[m] == level)
        print(f"floor {level}: {', '.join(names)}")
    back = sorted((m, t) for m in edges for t in edges[m] if floor[t] >= floor[m])
    print(f"back-up arrows (to the same or a higher floor): {len(back)}")
    for source, target in back:
        print(f"  {source} (floor {floor[source]}) -> {target} (floor {floor[target]})")
    print(f"circles: {len(circles)}")
    for circle in circles:
        print(f"  {' <-> '.join(circle)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
