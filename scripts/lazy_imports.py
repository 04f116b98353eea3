"""Print every function-level import that does not say why it is lazy; exit 1 if there is one.

An import inside a function hides a dependency and runs on every call, so
xdpguard keeps one only on purpose: bcc (it loads LLVM), numpy and pyroute2
(heavy), and the CLI commands' back ends (start-up time of `--help` and of
the other commands).  Such an import must carry a comment saying why: at
the end of its own line, on the line above it, or on (or above) the first
line of its block, a run of imports that follow each other, so one comment
covers the imports a function makes together.  A comment that is only a
tool pragma (`# noqa`, `# type: ignore`, ...) says nothing and does not count.

Imports under `if TYPE_CHECKING:` never run and are not checked (its `else:` is).  Reads
the sources (ast, tokenize), so nothing is imported.
Run from the checkout: `python scripts/lazy_imports.py [package dir or file ...]`.
"""

from __future__ import annotations

import ast
import io
import re
import sys
import tokenize
from collections.abc import Iterator
from pathlib import Path

Import = ast.Import | ast.ImportFrom
PRAGMA = re.compile(r"#\s*(noqa|type:|pragma|fmt:|pyright:|mypy:|ruff:)")


def comments(source: str) -> dict[int, str]:
    """Line number -> the comment on that line (tool pragmas left out)."""
    out: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT and not PRAGMA.match(tok.string) and tok.string.strip("# "):
            out[tok.start[0]] = tok.string
    return out


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _blocks(body: list[ast.stmt]) -> Iterator[list[Import]]:
    """The runs of consecutive import statements in a statement list."""
    run: list[Import] = []
    for stmt in body:
        if isinstance(stmt, Import):
            run.append(stmt)
            continue
        if run:
            yield run
        run = []
    if run:
        yield run


def function_imports(tree: ast.AST) -> Iterator[list[Import]]:
    """Each block of imports that runs inside a function (nested ones included)."""
    todo: list[tuple[ast.AST, bool]] = [(tree, False)]
    while todo:
        node, in_function = todo.pop()
        if _is_type_checking(node):  # its body never runs; an `else:` does
            assert isinstance(node, ast.If)
            if in_function:
                yield from _blocks(node.orelse)
            todo.extend((child, in_function) for child in node.orelse)
            continue
        inside = in_function or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        if inside:
            for field in ("body", "orelse", "finalbody"):
                stmts = getattr(node, field, None)
                if isinstance(stmts, list):
                    yield from _blocks([s for s in stmts if isinstance(s, ast.stmt)])
        todo.extend((child, inside) for child in ast.iter_child_nodes(node))


def uncommented(source: str, filename: str = "<source>") -> list[int]:
    """Lines of the function-level imports in `source` that no comment explains."""
    said = comments(source)
    lines = source.splitlines()

    def explained(stmt: Import) -> bool:
        above = stmt.lineno - 1  # counts only as a line of its own: not the tail of other code
        if above in said and lines[above - 1].lstrip().startswith("#"):
            return True
        return any(n in said for n in range(stmt.lineno, (stmt.end_lineno or stmt.lineno) + 1))

    bad: list[int] = []
    for block in function_imports(ast.parse(source, filename)):
        if explained(block[0]):
            continue
        bad.extend(stmt.lineno for stmt in block if not explained(stmt))
    return sorted(bad)


def files(args: list[str]) -> list[Path]:
    out: list[Path] = []
    for a in args or ["xdpguard"]:
        p = Path(a)
        out.extend(sorted(p.rglob("*.py")) if p.is_dir() else [p])
    return out


def main() -> int:
    found = 0
    checked = files(sys.argv[1:])
    for path in checked:
        source = path.read_text()
        lines = source.splitlines()
        for n in uncommented(source, str(path)):
            print(f"{path}:{n}: function-level import, no comment says why: {lines[n - 1].strip()}")
            found += 1
    print(f"{len(checked)} files, {found} unexplained function-level imports")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
