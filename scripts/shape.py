"""The project's size where its style sets limits: module lines, function lines, the README.

    python scripts/shape.py                 # the largest modules, every long function, the README
    python scripts/shape.py --check         # exit 1 if a module or a function is over its limit
    python scripts/shape.py --function-lines 40 --top 20

The style asks for modules under 500 lines and functions under 60: past that a reader can no
longer hold one in mind. A function counts from its ``def`` (decorators included) to its last
line, docstring and nested functions included, since a reader reads all of it; a nested
function or a method is listed under its qualified name (``Run.load``, ``main.<locals>.step``).
"""

from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("prm", "explorer")
MODULE_LIMIT = 500
FUNCTION_LIMIT = 60


@dataclass(frozen=True, kw_only=True)
class Function:
    path: str
    name: str
    line: int
    lines: int


def modules(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> dict[str, int]:
    """Line count of every Python file of ``packages``, by path relative to ``root``."""
    return {p.relative_to(root).as_posix(): len(p.read_text().splitlines())
            for package in packages for p in sorted((root / package).rglob("*.py"))}


def functions(path: Path, shown: str) -> list[Function]:
    """Every function and method of one file, nested ones included, with its length in lines."""
    found: list[Function] = []

    def walk(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = min([child.lineno, *(d.lineno for d in child.decorator_list)])
                name = prefix + child.name
                found.append(Function(path=shown, name=name, line=child.lineno, lines=child.end_lineno - first + 1))
                walk(child, name + ".<locals>.")
            elif isinstance(child, ast.ClassDef):
                walk(child, prefix + child.name + ".")
            else:
                walk(child, prefix)

    walk(ast.parse(path.read_text(), filename=str(path)), "")
    return found


def long_functions(limit: int, root: Path = ROOT) -> list[Function]:
    """Functions of more than ``limit`` lines, longest first."""
    every = [f for shown in modules(root) for f in functions(root / shown, shown)]
    return sorted((f for f in every if f.lines > limit), key=lambda f: (-f.lines, f.path, f.line))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--function-lines", type=int, default=FUNCTION_LIMIT, help="list functions longer than this")
    parser.add_argument("--top", type=int, default=15, help="how many of the largest modules to list")
    parser.add_argument("--check", action="store_true",
                        help=f"exit 1 if a module has over {MODULE_LIMIT} lines or a function over {FUNCTION_LIMIT}")
    args = parser.parse_args(argv)
    sizes = modules()
    print(f"largest modules ({len(sizes)} files, {sum(sizes.values())} lines):")
    for path, n in sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0]))[: args.top]:
        print(f"  {n:5d}  {path}{'   over ' + str(MODULE_LIMIT) if n > MODULE_LIMIT else ''}")
    long = long_functions(args.function_lines)
    print(f"functions over {args.function_lines} lines: {len(long)}")
    for f in long:
        print(f"  {f.lines:5d}  {f.path}:{f.line} {f.name}")
    print(f"README.md: {len((ROOT / 'README.md').read_text().splitlines())} lines")
    if not args.check:
        return 0
    big = [p for p, n in sizes.items() if n > MODULE_LIMIT]
    too_long = long_functions(FUNCTION_LIMIT)
    print(f"check: {len(big)} module(s) over {MODULE_LIMIT} lines, {len(too_long)} function(s) over {FUNCTION_LIMIT}")
    return 1 if big or too_long else 0


if __name__ == "__main__":
    sys.exit(main())
