"""An interactive SQL and administration shell for dqlite clusters.

    python -m dqlite -s 10.0.0.1:9001 -s 10.0.0.2:9001 app
    dqlite-shell -s 10.0.0.1:9001 app -c "SELECT count(*) FROM kv"
    dqlite-shell --store /var/lib/app/cluster.yaml --format json app < queries.sql

SQL statements end with ``;`` and may span lines; ``.help`` lists the dot
commands (cluster: ``.leader``, ``.cluster``, ``.describe``, ``.transfer``,
``.remove``, ``.weight``, ``.dump``; database: ``.tables``, ``.schema``;
``.timer``, ``.format``, ``.quit``).  An error is one line on stderr and the
shell goes on; ``-c`` and piped input exit with status 1 if anything failed.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
import re
import sqlite3
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import dqlite
from dqlite.cluster import ClusterAdmin, find_node
from dqlite.tls import client_context

__all__ = ["Shell", "main"]

FORMATS = ("table", "json", "csv")
PROMPT, CONTINUATION = "dqlite> ", "   ...> "

HELP = """\
SQL statements end with ';' and may span several lines.
.cluster               the cluster's members: id, address, role, leader
.describe NODE         a node's failure domain and weight (NODE: id or address)
.dump [DIR]            write the database's files (the database and its WAL) into DIR (default .)
.format table|json|csv how results are shown
.help                  this text
.leader                the leader's address
.quit / .exit          leave the shell
.remove NODE           remove a node from the cluster
.schema [TABLE]        the CREATE statements (of one table and its indexes)
.tables                the tables and views
.timer on|off          show how long each statement took
.transfer NODE         hand leadership to a node
.weight NODE N         set a node's weight"""


class ShellError(Exception):
    """A mistake in a dot command (its usage), shown as one line."""


def read_store(path: str | os.PathLike[str]) -> list[str]:
    """Node addresses from a node store file.

    go-dqlite's YAML store (``- Address: host:port`` entries, as LXD and
    Juju write it) or one ``host:port`` per line (``#`` comments).
    """
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ShellError(f"cannot read node store {os.fspath(path)!r}: {exc.strerror or exc}") from None
    addresses = re.findall(r"(?im)^\s*-?\s*address:\s*['\"]?([^'\"\s]+)", text)
    if not addresses:
        addresses = [line.split("#", 1)[0].strip() for line in text.splitlines()]
        addresses = [a for a in addresses if a]
    if not addresses:
        raise ShellError(f"node store {os.fspath(path)!r} names no node")
    return addresses


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "x'" + bytes(value).hex() + "'"
    return str(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def format_rows(columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str) -> str:
    """Rows as an aligned table, a JSON array of objects, or CSV (with a header)."""
    if fmt == "json":
        return json.dumps([{c: _jsonable(v) for c, v in zip(columns, row)} for row in rows], ensure_ascii=False)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([["" if v is None else _cell(v) for v in row] for row in rows])
        return out.getvalue().rstrip("\n")
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    numeric = [all(isinstance(row[i], (int, float)) and not isinstance(row[i], bool) for row in rows if row[i] is not None)
               for i in range(len(columns))]

    def line(values: Sequence[str]) -> str:
        return " | ".join(v.rjust(w) if num else v.ljust(w)
                          for v, w, num in zip(values, widths, numeric)).rstrip()

    lines = [line(list(columns)), "-+-".join("-" * w for w in widths)]
    lines += [line(r) for r in cells]
    lines.append(f"({len(rows)} row{'' if len(rows) == 1 else 's'})")
    return "\n".join(lines)


def split_statements(text: str) -> tuple[list[str], str]:
    """Complete SQL statements in ``text`` and the incomplete rest."""
    statements: list[str] = []
    current = ""
    for piece in re.split(r"(?<=;)", text):
        current += piece
        if current.strip() and sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    return statements, current if current.strip() else ""


class Shell:
    """The shell's state and commands; ``main`` wires it to a terminal or a pipe."""

    def __init__(self, addresses: Sequence[str], database: str, *, ssl: Any = None, fmt: str = "table",
                 timeout: float = 10.0, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.addresses = list(addresses)
        self.database = database
        self.ssl = ssl
        self.format = fmt
        self.timeout = timeout
        self.timer = False
        self.out = out if out is not None else sys.stdout
        self.err = err if err is not None else sys.stderr
        self.admin = ClusterAdmin(self.addresses, timeout=timeout, ssl=ssl)
        self._conn: dqlite.Connection | None = None
        self.failures = 0
        self.done = False

    # -- output ----------------------------------------------------------------

    def print(self, text: str) -> None:
        try:
            print(text, file=self.out, flush=True)
        except BrokenPipeError:
            # The reader went away (``| head``): stop quietly, as other shells do.
            self.done = True
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, self.out.fileno())  # nothing left to flush at exit
                os.close(devnull)
            except (OSError, ValueError, io.UnsupportedOperation):
                pass

    def error(self, message: str) -> None:
        self.failures += 1
        message = " ".join(str(message).split()) or "unknown error"
        print(f"Error: {message}", file=self.err, flush=True)

    def show(self, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        self.print(format_rows(columns, rows, self.format))

    # -- running input -----------------------------------------------------------

    def connection(self) -> dqlite.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = dqlite.connect(self.addresses, self.database, timeout=self.timeout,
                                        autocommit=True, ssl=self.ssl)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def run(self, text: str) -> bool:
        """Run one dot command or SQL text (all its statements); False if something failed."""
        before = self.failures
        stripped = text.strip()
        if stripped.startswith("."):
            self.guarded(lambda: self.dot(stripped))
        else:
            statements, rest = split_statements(text)
            if rest:
                statements.append(rest.strip())  # -c "SELECT 1" without the ';'
            for sql in statements:
                if self.done or not self.guarded(lambda: self.sql(sql)):
                    break
        return self.failures == before

    def guarded(self, action: Callable[[], None]) -> bool:
        """Run ``action``; an error becomes one line, never a traceback."""
        try:
            action()
        except KeyboardInterrupt:
            self.error("interrupted")
        except dqlite.ConnectionLostError as exc:
            self.error(f"{exc} (the connection to the leader was lost; the next statement reconnects)")
            self._recover()
        except (dqlite.Error, OSError, ShellError, ValueError) as exc:
            self.error(str(exc))
        else:
            return True
        return False

    def _recover(self) -> None:
        """After a lost leader: clear a lost transaction so the next statement reconnects."""
        if self._conn is not None:
            try:
                self._conn.rollback()
            except (dqlite.Error, OSError):
                self.close()

    def sql(self, sql: str) -> None:
        start = time.perf_counter()
        cursor = self.connection().execute(sql)
        if cursor.description is not None:
            rows = cursor.fetchall()
            self.show([d[0] for d in cursor.description], rows)
        if self.timer:
            self.print(f"Run Time: {time.perf_counter() - start:.6f} s")

    # -- dot commands ------------------------------------------------------------

    def dot(self, line: str) -> None:
        name, *args = line.split()
        command = _DOT_COMMANDS.get(name.lower())
        if command is None:
            raise ShellError(f"unknown command {name}; .help lists them")
        usage, minimum, maximum, method = command
        if not minimum <= len(args) <= maximum:
            raise ShellError(f"usage: {usage}")
        start = time.perf_counter()
        method(self, *args)
        if self.timer and name.lower() not in (".timer", ".help"):
            self.print(f"Run Time: {time.perf_counter() - start:.6f} s")

    def _node(self, text: str) -> Any:
        return find_node(self.admin.members(), text)

    def cmd_help(self) -> None:
        self.print(HELP)

    def cmd_quit(self) -> None:
        self.done = True

    def cmd_leader(self) -> None:
        self.print(self.admin.leader())

    def cmd_cluster(self) -> None:
        leader = self.admin.leader()
        members = ClusterAdmin([leader], timeout=self.timeout, ssl=self.ssl).members()
        self.show(["id", "address", "role", "leader"],
                  [(m.id, m.address, m.role_name, m.address == leader) for m in sorted(members)])

    def cmd_describe(self, node: str) -> None:
        member = self._node(node)
        domain, weight = self.admin.describe(member.address)
        self.show(["id", "address", "role", "failure_domain", "weight"],
                  [(member.id, member.address, member.role_name, domain, weight)])

    def cmd_transfer(self, node: str) -> None:
        member = self._node(node)
        self.admin.transfer(member.id)
        self.close()  # it talks to the old leader: the next statement connects to the new one
        self.print(f"leadership transferred to node {member.id} ({member.address})")

    def cmd_remove(self, node: str) -> None:
        member = self._node(node)
        self.admin.remove(member.id)
        self.close()  # it may have talked to the removed node
        self.print(f"removed node {member.id} ({member.address})")

    def cmd_weight(self, node: str, weight: str) -> None:
        try:
            value = int(weight)
        except ValueError:
            raise ShellError(f"weight {weight!r} is not a whole number") from None
        member = self._node(node)
        self.admin.weight(member.address, value)
        self.print(f"node {member.id} ({member.address}) has weight {value}")

    def cmd_dump(self, directory: str = ".") -> None:
        files = self.admin.dump(self.database)
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            safe = os.path.basename(name)
            if safe in ("", ".", ".."):
                raise ShellError(f"the node sent a file with an unusable name {name!r}")
            (folder / safe).write_bytes(data)
            self.print(f"wrote {folder / safe} ({len(data)} bytes)")

    def cmd_tables(self) -> None:
        rows = self.connection().execute(
            "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite_%' "
            "ORDER BY name").fetchall()
        if self.format == "table":
            if rows:
                self.print("\n".join(r[0] for r in rows))
        else:
            self.show(["name"], rows)

    def cmd_schema(self, table: str | None = None) -> None:
        query = "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%'"
        params: tuple[str, ...] = ()
        if table is not None:
            query += " AND lower(tbl_name) = lower(?)"
            params = (table,)
        rows = self.connection().execute(query + " ORDER BY tbl_name, type DESC, name", params).fetchall()
        if table is not None and not rows:
            raise ShellError(f"no table {table!r} in database {self.database!r}")
        if self.format == "table":
            if rows:
                self.print("\n".join(r[0] + ";" for r in rows))
        else:
            self.show(["sql"], rows)

    def cmd_timer(self, state: str) -> None:
        if state.lower() not in ("on", "off"):
            raise ShellError("usage: .timer on|off")
        self.timer = state.lower() == "on"

    def cmd_format(self, fmt: str) -> None:
        if fmt not in FORMATS:
            raise ShellError(f"usage: .format {'|'.join(FORMATS)}")
        self.format = fmt

    # -- input loops -------------------------------------------------------------

    def interact(self, stdin: TextIO, prompts: bool) -> None:
        """Read statements and commands until EOF or ``.quit``."""
        pending = ""
        while not self.done:
            try:
                if prompts:
                    line = input(CONTINUATION if pending else PROMPT)
                else:
                    line = stdin.readline()
                    if not line:
                        break
            except EOFError:
                if prompts:
                    print(file=self.out)
                break
            except KeyboardInterrupt:
                print(file=self.out)
                pending = ""  # Ctrl-C drops the statement being typed
                continue
            if not pending and line.strip().startswith("."):
                self.run(line)
                continue
            pending += line if line.endswith("\n") else line + "\n"
            statements, pending = split_statements(pending)
            for sql in statements:
                if not self.guarded(lambda: self.sql(sql)):
                    break
        if pending.strip():
            self.run(pending)


_DOT_COMMANDS: dict[str, tuple[str, int, int, Callable[..., None]]] = {
    ".help": (".help", 0, 0, Shell.cmd_help),
    ".quit": (".quit", 0, 0, Shell.cmd_quit),
    ".exit": (".exit", 0, 0, Shell.cmd_quit),
    ".leader": (".leader", 0, 0, Shell.cmd_leader),
    ".cluster": (".cluster", 0, 0, Shell.cmd_cluster),
    ".describe": (".describe NODE", 1, 1, Shell.cmd_describe),
    ".transfer": (".transfer NODE", 1, 1, Shell.cmd_transfer),
    ".remove": (".remove NODE", 1, 1, Shell.cmd_remove),
    ".weight": (".weight NODE N", 2, 2, Shell.cmd_weight),
    ".dump": (".dump [DIR]", 0, 1, Shell.cmd_dump),
    ".tables": (".tables", 0, 0, Shell.cmd_tables),
    ".schema": (".schema [TABLE]", 0, 1, Shell.cmd_schema),
    ".timer": (".timer on|off", 1, 1, Shell.cmd_timer),
    ".format": (".format table|json|csv", 1, 1, Shell.cmd_format),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dqlite-shell", description="SQL and cluster administration for a dqlite cluster.",
        epilog="Type .help in the shell for its dot commands.")
    parser.add_argument("database", nargs="?", default="main", help="the database to open (default: main)")
    parser.add_argument("statements", nargs="?", metavar="SQL",
                        help="as -c (go-dqlite's shell takes the command here)")
    parser.add_argument("-s", "--server", "--servers", action="append", default=[], metavar="HOST:PORT",
                        help="nodes of the cluster: repeatable, comma-separated, or file://STORE "
                             "(default 127.0.0.1:9001)")
    parser.add_argument("--store", metavar="FILE", help="a node store file (go-dqlite's YAML, or host:port lines)")
    parser.add_argument("-c", "--command", metavar="SQL", help="run this SQL (or dot command) and exit")
    parser.add_argument("-f", "--format", choices=FORMATS + ("tabular",), default="table",
                        help="how results are shown (tabular: table, as go-dqlite names it)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds for the leader search and each answer")
    parser.add_argument("--ssl-ca", "--ca", metavar="FILE", help="PEM authorities the nodes' certificates chain to")
    parser.add_argument("--ssl-cert", "--cert", metavar="FILE",
                        help="client certificate (PEM) for mutual TLS; without --ssl-ca it is also the "
                             "one certificate the nodes must present (a cluster certificate, as go-dqlite uses)")
    parser.add_argument("--ssl-key", "--key", "-k", metavar="FILE", help="client private key (PEM) for mutual TLS")
    parser.add_argument("-v", "--verbose", action="store_true", help="log the driver's messages to stderr")
    parser.add_argument("--history", metavar="FILE", default=os.path.expanduser("~/.dqlite_history"),
                        help="readline history file (default ~/.dqlite_history)")
    return parser


def tls_context(ca: str | None, cert: str | None, key: str | None) -> Any:
    """The shell's ``SSLContext``, or None without TLS options.

    As ``dqlite.tls.client_context``, except that a client certificate given
    without ``ca`` is also the one certificate trusted for the nodes, whatever
    host name it names: the cluster certificate that LXD-style deployments
    (and go-dqlite's own shell) share between nodes and clients.
    """
    if not (ca or cert or key):
        return None
    if cert and not ca:
        context = client_context(cert, cert, key)
        context.check_hostname = False  # the pinned certificate is the only trust anchor
        return context
    return client_context(ca, cert, key)


def _setup_readline(history: str) -> Callable[[], None]:
    try:
        import readline
    except ImportError:  # pragma: no cover - no readline on this platform
        return lambda: None
    try:
        readline.read_history_file(history)
    except OSError:
        pass
    readline.set_history_length(1000)

    def save() -> None:
        try:
            readline.write_history_file(history)
        except OSError:
            pass

    return save


def main(argv: Sequence[str] | None = None) -> int:
    """Run the shell; the exit status (0: everything worked)."""
    args = _parser().parse_args(argv)
    if args.verbose:
        logging.basicConfig(level=logging.DEBUG, format="%(name)s: %(message)s")
    else:
        # Errors reach the user as one line each; the driver's warnings would repeat them.
        logging.getLogger("dqlite").addHandler(logging.NullHandler())
        logging.getLogger("dqlite").propagate = False
    try:
        addresses: list[str] = []
        for entry in args.server:
            if entry.startswith("file://"):
                addresses += read_store(entry[len("file://"):])
            else:
                addresses += [part.strip() for part in entry.split(",") if part.strip()]
        if args.store:
            addresses += read_store(args.store)
        if not addresses:
            addresses = ["127.0.0.1:9001"]
        addresses = list(dict.fromkeys(addresses))
        ssl = tls_context(args.ssl_ca, args.ssl_cert, args.ssl_key)
        if args.command is not None and args.statements is not None:
            raise ShellError("give the SQL either with -c or after the database, not both")
        command = args.command if args.command is not None else args.statements
        fmt = "table" if args.format == "tabular" else args.format
    except (ShellError, dqlite.Error) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    shell = Shell(addresses, args.database, ssl=ssl, fmt=fmt, timeout=args.timeout)
    try:
        if command is not None:
            return 0 if shell.run(command) else 1
        interactive = sys.stdin.isatty()
        save = _setup_readline(args.history) if interactive else (lambda: None)
        if interactive:
            print(f"dqlite shell: database {args.database!r} on {', '.join(addresses)}. "
                  f".help for help, .quit or Ctrl-D to leave.", file=sys.stderr)
        try:
            shell.interact(sys.stdin, prompts=interactive)
        finally:
            save()
        return 0 if interactive or shell.failures == 0 else 1
    except KeyboardInterrupt:
        return 130
    finally:
        try:
            shell.close()
        except (dqlite.Error, OSError):
            pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
