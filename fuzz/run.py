#!/usr/bin/env python3
"""Run the fuzzers (fuzz/fuzz_decoder.py, fuzz/fuzz_encoder.py) for a bounded time.

Picks the best build the machine has:

* ``asan``: the AddressSanitizer + coverage build (fuzz/build_instrumented.py)
  with atheris' ``asan_with_fuzzer.so`` preloaded and ``PYTHONMALLOC=malloc``
  (so every Python allocation is checked too);
* ``cov``: the coverage-only build, with the same preload;
* ``none``: the normal in-place build, without native coverage (said loudly).

The targets run in parallel (one process each), each for ``--time`` seconds,
with libFuzzer's memory and time bounds: ``-rss_limit_mb``,
``-malloc_limit_mb``, ``-timeout`` per input.  New inputs go to ``--work``
(default build/fuzz/work/TARGET), seeds come from build/fuzz/corpus/TARGET
(fuzz/make_corpus.py), findings to build/fuzz/findings/.

Exit status 0 when every target ran its time out cleanly; the last lines
printed are one summary per target (runs, exec/s, corpus, build).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FUZZ = ROOT / "fuzz"
sys.path.insert(0, str(FUZZ))

import build_instrumented  # noqa: E402

TARGETS = {"decoder": "fuzz_decoder.py", "encoder": "fuzz_encoder.py"}
MAX_LEN = {"decoder": 4096, "encoder": 8192}


def atheris_preload(python: str) -> str | None:
    code = "import atheris, os; print(os.path.join(atheris.path(), 'asan_with_fuzzer.so'))"
    out = subprocess.run([python, "-c", code], capture_output=True, text=True)
    if out.returncode != 0:
        return None
    path = out.stdout.strip()
    return path if os.path.exists(path) else None


def choose(variant: str, python: str) -> tuple[str, dict[str, str], str]:
    """(variant used, extra environment, why)."""
    preload = atheris_preload(python)
    candidates = ["asan", "cov"] if variant == "auto" else [variant]
    reasons = []
    for name in candidates:
        if name == "none":
            break
        so = build_instrumented.so_path(name)
        if not so.exists():
            reasons.append(f"{name}: {so} not built (fuzz/build_instrumented.py)")
            continue
        if preload is None:
            reasons.append(f"{name}: atheris has no asan_with_fuzzer.so to preload")
            continue
        env = {
            "DQLITE_FUZZ_EXT": str(so),
            "LD_PRELOAD": preload,
            # Python leaks at exit by design; a smaller quarantine keeps RSS honest.
            "ASAN_OPTIONS": "detect_leaks=0:quarantine_size_mb=64:malloc_context_size=10:"
                            "allocator_may_return_null=0:handle_abort=1",
        }
        if name == "asan":
            env["PYTHONMALLOC"] = "malloc"
        return name, env, f"instrumented build {so}"
    return "none", {"DQLITE_FUZZ_EXT": ""}, "UNINSTRUMENTED build (" + "; ".join(reasons or ["asked for"]) + ")"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time", type=int, default=180, help="seconds per target (they run in parallel)")
    parser.add_argument("--targets", default="decoder,encoder")
    parser.add_argument("--variant", choices=["auto", "asan", "cov", "none"], default="auto")
    parser.add_argument("--corpus", default=str(ROOT / "build" / "fuzz" / "corpus"))
    parser.add_argument("--work", default=None, help="where new inputs go (default build/fuzz/work/TARGET; "
                                                     "'tmp' for a throw-away folder)")
    parser.add_argument("--rss-limit-mb", type=int, default=2048)
    parser.add_argument("--malloc-limit-mb", type=int, default=512)
    parser.add_argument("--timeout", type=int, default=10, help="seconds one input may take")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--reproduce", metavar="FILE", help="run the (single) target on one saved input")
    args = parser.parse_args()

    variant, extra_env, why = choose(args.variant, args.python)
    print(f"fuzz: {why}", flush=True)
    if args.reproduce:
        target = args.targets.split(",")[0] if "," not in args.targets else (
            "encoder" if "encoder" in Path(args.reproduce).name else "decoder")
        cmd = [args.python, str(FUZZ / TARGETS[target]), f"-rss_limit_mb={args.rss_limit_mb}",
               f"-malloc_limit_mb={args.malloc_limit_mb}", f"-timeout={args.timeout}", args.reproduce]
        return subprocess.run(cmd, cwd=ROOT, env={**os.environ, **extra_env}).returncode
    findings = ROOT / "build" / "fuzz" / "findings"
    findings.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.TemporaryDirectory(prefix="dqlite-fuzz-") if args.work == "tmp" else None
    procs = {}
    logs = {}
    for target in args.targets.split(","):
        seeds = Path(args.corpus) / target
        if tmp is not None:
            work = Path(tmp.name) / target
        else:
            work = Path(args.work) / target if args.work else ROOT / "build" / "fuzz" / "work" / target
        work.mkdir(parents=True, exist_ok=True)
        cmd = [
            args.python, str(FUZZ / TARGETS[target]),
            f"-max_total_time={args.time}", f"-rss_limit_mb={args.rss_limit_mb}",
            f"-malloc_limit_mb={args.malloc_limit_mb}", f"-timeout={args.timeout}",
            f"-max_len={MAX_LEN[target]}", "-print_final_stats=1",
            f"-artifact_prefix={findings}/{target}-",
            str(work),
        ]
        if seeds.is_dir():
            cmd.append(str(seeds))
        env = {**os.environ, **extra_env, "DQLITE_FUZZ_FINDINGS": str(findings)}
        log = tempfile.TemporaryFile(mode="w+")
        logs[target] = log
        # A session of its own: the llvm-symbolizer helpers libFuzzer and ASan
        # start can outlive the target (after a crash); they are ended with it.
        procs[target] = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
    deadline = time.monotonic() + args.time + 120
    failed = False
    summaries = []
    for target, proc in procs.items():
        try:
            rc = proc.wait(timeout=max(deadline - time.monotonic(), 1))
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
            print(f"fuzz {target}: did not stop after its time (killed)")
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # leftovers of the target's own process group
        log = logs[target]
        log.seek(0)
        text = log.read()
        runs = re.search(r"stat::number_of_executed_units: (\d+)", text)
        speed = re.search(r"stat::average_exec_per_sec:\s+(\d+)", text)
        corpus = re.findall(r"corp: (\d+)/", text)
        cov = re.findall(r"cov: (\d+)", text)
        ok = rc == 0 and runs is not None
        failed |= not ok
        if not ok:
            # The finding: libFuzzer's and the harness' last words.
            lines = [ln for ln in text.splitlines() if not ln.startswith("INFO: Instrumenting")]
            print(f"---- fuzz {target} (exit {rc}) ----")
            print("\n".join(lines[-80:]))
        summaries.append(
            f"fuzz {target}: {'ok' if ok else 'FAILED'}, exit {rc}, "
            f"{runs.group(1) if runs else '?'} inputs, {speed.group(1) if speed else '?'} exec/s, "
            f"coverage {cov[-1] if cov else '?'}, corpus {corpus[-1] if corpus else '?'}, "
            f"{variant} build, {args.time}s")
    if tmp is not None:
        tmp.cleanup()
    for line in summaries:
        print(line)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
