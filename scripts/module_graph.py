"""The import graph of ``prm`` and ``explorer``: drawn, searched for cycles, and walked between two modules.

    python scripts/module_graph.py --out docs/module-graph-before          # writes .dot, and .svg if `dot` exists
    python scripts/module_graph.py --cycles                                # exit 1 if any import cycle
    python scripts/module_graph.py --path prm.engine explorer.views.clustering

Imports are read by ``grimp`` from the source, never executed, and an import inside a function
counts as much as one at the top of a module: Python runs it as soon as the function is called,
so a cycle hidden that way still ties the two modules together (and still breaks when one
moves). Function-level imports are drawn dashed, edges on a cycle red.

In the drawing every sub-package of ``prm`` (``prm.datasets`` ...) is one node, so the engine's
layers stay readable; ``explorer``'s views and figures stay one node per module, where the rule
"views import figures, never the other way" is what one looks at. ``--collapse`` changes that.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import subprocess
import sys
from collections import deque
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("prm", "explorer")


def build_graph(packages: tuple[str, ...] = PACKAGES, *, external: bool = False) -> grimp.ImportGraph:
    """The import graph of ``packages`` (each importable from ``sys.path``); nothing is cached on disk."""
    # Imports under ``if TYPE_CHECKING:`` name a type for annotations only; they never run, so
    # they are no edge of the import graph a cycle could form in.
    return grimp.build_graph(*packages, include_external_packages=external, exclude_type_checking_imports=True,
                             cache_dir=None)


def edges(graph: grimp.ImportGraph, packages: tuple[str, ...] = PACKAGES) -> set[tuple[str, str]]:
    """(importer, imported) for every direct import between modules of ``packages``."""
    inside = {m for m in graph.modules if m.split(".")[0] in packages}
    return {(a, b) for a in inside for b in graph.find_modules_directly_imported_by(a) if b in inside}


def cycles(links: set[tuple[str, str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (or of one importing itself):
    each is a set of modules any of which reaches every other through imports."""
    succ: dict[str, list[str]] = {}
    for a, b in sorted(links):
        succ.setdefault(a, []).append(b)
        succ.setdefault(b, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm; a few hundred modules at most
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in succ[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            members = set()
            while True:
                top = stack.pop()
                on_stack.discard(top)
                members.add(top)
                if top == node:
                    break
            if len(members) > 1 or (node, node) in links:
                found.append(frozenset(members))

    for node in succ:
        if node not in index:
            visit(node)
    return sorted(found, key=sorted)


def cycle_path(component: frozenset[str], links: set[tuple[str, str]]) -> list[str]:
    """One closed walk through ``component``, from its first module (by name) back to it."""
    start = min(component)
    succ = {a: sorted(b for x, b in links if x == a and b in component) for a in component}
    before: dict[str, str] = {}
    queue = deque(succ[start])
    for nxt in succ[start]:
        before.setdefault(nxt, start)
    while queue:
        node = queue.popleft()
        if node == start:
            break
        for nxt in succ[node]:
            if nxt not in before:
                before[nxt] = node
                queue.append(nxt)
    path = [start]
    node = before[start]
    while node != start:
        path.append(node)
        node = before[node]
    return [start, *reversed(path[1:]), start]


def source_file(module: str) -> Path | None:
    """Where ``module``'s source lies, found from its top-level package without importing it."""
    top, *rest = module.split(".")
    spec = importlib.util.find_spec(top)
    if spec is None or not spec.submodule_search_locations:
        return Path(spec.origin) if spec and spec.origin else None
    base = Path(list(spec.submodule_search_locations)[0]).joinpath(*rest)
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def import_sites(graph: grimp.ImportGraph, importer: str, imported: str) -> list[tuple[str, int, bool]]:
    """(file, line, inside a function or class?) of each statement importing ``imported`` into ``importer``."""
    where = source_file(importer)
    lines = where.read_text().splitlines() if where else []
    sites = []
    for detail in graph.get_import_details(importer=importer, imported=imported):
        number = detail["line_number"]
        text = lines[number - 1] if 0 < number <= len(lines) else ""
        sites.append((_shown(where), number, text[:1].isspace()))
    return sites


def describe_import(graph: grimp.ImportGraph, importer: str, imported: str) -> str:
    """'file:line' of each statement making the import, '(function-level)' where it is indented."""
    sites = import_sites(graph, importer, imported)
    return ", ".join(f"{f}:{n}{' (function-level)' if nested else ''}" for f, n, nested in sites) or "?"


def lazy(graph: grimp.ImportGraph, importer: str, imported: str) -> bool:
    """Is every statement importing ``imported`` into ``importer`` inside a function or class?"""
    sites = import_sites(graph, importer, imported)
    return bool(sites) and all(nested for _, _, nested in sites)


def explain(graph: grimp.ImportGraph, component: frozenset[str], links: set[tuple[str, str]]) -> str:
    """'a --[a.py:3]--> b --[b.py:9 (function-level)]--> a': a cycle, with the statements to fix."""
    path = cycle_path(component, links)
    return path[0] + "".join(f" --[{describe_import(graph, a, b)}]--> {b}" for a, b in zip(path, path[1:]))


def _shown(path: Path | None) -> str:
    if path is None:
        return "?"
    try:
        return path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)


# ----------------------------------------------------------------------------- drawing


def default_collapse(graph: grimp.ImportGraph) -> list[str]:
    """Every sub-package of ``prm``: a module with children, below the top level."""
    return sorted(m for m in graph.modules if m.startswith("prm.") and graph.find_children(m))


def collapsed(module: str, collapse: list[str]) -> str:
    for package in collapse:
        if module == package or module.startswith(package + "."):
            return package + ".*"
    return module


def to_dot(graph: grimp.ImportGraph, links: set[tuple[str, str]], collapse: list[str]) -> str:
    """Graphviz DOT text: one cluster per top-level package, red edges and nodes on cycles,
    dashed edges where every import is function-level; modules that import nothing of the
    project and are imported by none are left out."""
    component = {m: i for i, c in enumerate(cycles(links)) for m in c}
    drawn: dict[tuple[str, str], dict[str, bool]] = {}
    for a, b in sorted(links):
        key = (collapsed(a, collapse), collapsed(b, collapse))
        if key[0] == key[1]:
            continue
        style = drawn.setdefault(key, {"red": False, "lazy": True})
        style["red"] |= a in component and component[a] == component.get(b)
        style["lazy"] &= lazy(graph, a, b)
    nodes = sorted({n for edge in drawn for n in edge})  # a package's empty __init__ alone says nothing
    red_nodes = {collapsed(m, collapse) for m in component}
    out = ["digraph imports {", '  rankdir=LR; node [shape=box, fontname="Helvetica", fontsize=10];',
           "  edge [color=gray40, arrowsize=0.6];"]
    for package in PACKAGES:
        out.append(f'  subgraph "cluster_{package}" {{ label="{package}"; color=gray70;')
        out += [f'    "{n}"{" [color=red, fontcolor=red]" if n in red_nodes else ""};'
                for n in nodes if n.split(".")[0] == package]
        out.append("  }")
    for (a, b), style in sorted(drawn.items()):
        attrs = [*(["color=red", "penwidth=1.6"] if style["red"] else []), *(["style=dashed"] if style["lazy"] else [])]
        out.append(f'  "{a}" -> "{b}"' + (f" [{', '.join(attrs)}]" if attrs else "") + ";")
    out.append("}")
    return "\n".join(out) + "\n"


def write_drawing(dot_text: str, out: Path) -> list[Path]:
    """``out``.dot, and ``out``.svg when Graphviz's ``dot`` is installed; the files written."""
    out.parent.mkdir(parents=True, exist_ok=True)
    written = [out.with_suffix(".dot")]
    written[0].write_text(dot_text)
    if shutil.which("dot"):
        subprocess.run(["dot", "-Tsvg", str(written[0]), "-o", str(out.with_suffix(".svg"))], check=True)
        written.append(out.with_suffix(".svg"))
    return written


def print_paths(graph: grimp.ImportGraph, first: str, second: str) -> None:
    """The shortest import chains from ``first`` to ``second`` and back (packages include their modules)."""
    for a, b in ((first, second), (second, first)):
        chains = sorted(graph.find_shortest_chains(importer=a, imported=b, as_packages=True))
        print(f"{a} imports {b}: " + ("no" if not chains else f"{len(chains)} shortest chain(s)"))
        for chain in chains:
            print("  " + " -> ".join(chain))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="write OUT.dot (and OUT.svg when `dot` exists)")
    parser.add_argument("--collapse", nargs="*", help="packages drawn as one node (default: prm's sub-packages)")
    parser.add_argument("--cycles", action="store_true", help="list the import cycles; exit 1 if there is one")
    parser.add_argument("--path", nargs=2, metavar=("A", "B"), help="print the import chains between A and B")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    graph = build_graph()
    links = edges(graph)
    if args.path:
        print_paths(graph, *args.path)
    if args.out:
        collapse = default_collapse(graph) if args.collapse is None else args.collapse
        for path in write_drawing(to_dot(graph, links, collapse), args.out):
            print(f"wrote {_shown(path)}")
    found = cycles(links)
    if args.cycles or not (args.path or args.out):
        print("\n".join(f"cycle: {explain(graph, c, links)}" for c in found) or "no import cycle")
        return 1 if found else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
