#!/usr/bin/env python3
"""Lines of the driver's Python (``dqlite/*.py``; the compiled codec aside), per part, at git revisions.

    scripts/line-count.py d16640f HEAD

For each revision and part: all lines, and code lines (no blank line, comment
or docstring).  The parts:

* core: the session and its parts, and both shells (what issue 17 reshaped);
* harness: the node host and the pytest plugin (``server``, ``pytest_plugin``, ``_node``);
* features: modules that other issues added (pools, admin, node store, shell, hooks, TLS);
* rest: the SQL classifier, the sync wire, exceptions, rows, types, the package.
"""

from __future__ import annotations

import ast
import io
import subprocess
import sys
import tokenize

PARTS = {
    "core": "_session _discovery _failures _io _shell _statements _transaction aio connection",
    "harness": "server pytest_plugin _node",
    "features": "pool aiopool cluster aiocluster nodestore _probe shell __main__ hooks tls",
    "rest": "__init__ _sql _wire exceptions rows types",
}


def code_lines(source: str) -> int:
    """Lines holding a token that is not a comment, outside docstrings."""
    docstrings: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            docstrings.update(range(body[0].lineno, body[0].end_lineno + 1))
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}
    lines: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in skip:
            lines.update(n for n in range(token.start[0], token.end[0] + 1) if n not in docstrings)
    return len(lines)


def git(*args: str) -> str:
    return subprocess.run(["git", *args], check=True, capture_output=True, text=True).stdout


def main(revisions: list[str]) -> None:
    print("| revision | " + " | ".join(PARTS) + " | all |")
    print("|---" * (len(PARTS) + 2) + "|")
    for revision in revisions:
        present = set(git("ls-tree", "-r", "--name-only", revision, "dqlite/").split())
        cells, total, total_code = [], 0, 0
        for modules in PARTS.values():
            lines = code = 0
            for module in modules.split():
                path = f"dqlite/{module}.py"
                if path in present:
                    source = git("show", f"{revision}:{path}")
                    lines += source.count("\n")
                    code += code_lines(source)
            cells.append(f"{lines:,} ({code:,})")
            total += lines
            total_code += code
        unknown = sorted(p for p in present if p.endswith(".py")
                         and p[len("dqlite/"):-3] not in " ".join(PARTS.values()).split())
        if unknown:
            sys.exit(f"{revision}: {', '.join(unknown)} in no part: add them to PARTS")
        print(f"| {revision} | " + " | ".join(cells) + f" | {total:,} ({total_code:,}) |")


if __name__ == "__main__":
    main(sys.argv[1:] or ["HEAD"])
