#!/usr/bin/env python3
"""Build coverage-instrumented copies of the compiled codec for fuzzing.

The in-place build that ``make test`` uses (dqlite/_protocol.*.so) is left
alone: each variant is cythonized and compiled with clang into its own folder
under ``build/fuzz/`` and loaded ahead of the normal one by the harnesses
(fuzz/_loader.py).

Variants:

* ``asan``: ``-fsanitize=address,fuzzer-no-link``, to run with atheris'
  ``asan_with_fuzzer.so`` preloaded (libFuzzer and AddressSanitizer in one
  runtime, which atheris builds when it is installed from source with clang);
* ``cov``: ``-fsanitize=fuzzer-no-link`` only, coverage without a sanitizer,
  for an atheris that has no ``asan_with_fuzzer.so`` (the prebuilt wheel).

Usage: build_instrumented.py [--variant asan|cov|all] [--force]
Prints one line per variant: ``<variant> <path of the .so>`` or
``<variant> FAILED <why>``; exits 0 if at least one variant is usable.
Up to date variants (newer than dqlite/_protocol.pyx, .pxd and this script) are not
rebuilt.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYX = ROOT / "dqlite" / "_protocol.pyx"
OUT = ROOT / "build" / "fuzz"

# The same compiler directives as setup.py: the fuzzed code must be the shipped code.
DIRECTIVES = {
    "language_level": "3",
    "boundscheck": "False",
    "wraparound": "False",
    "cdivision": "True",
    "embedsignature": "True",
}

FLAGS = {
    "asan": ["-fsanitize=address,fuzzer-no-link", "-fno-omit-frame-pointer"],
    "cov": ["-fsanitize=fuzzer-no-link"],
}


def so_path(variant: str) -> Path:
    return OUT / variant / "dqlite" / ("_protocol" + sysconfig.get_config_var("EXT_SUFFIX"))


def find_clang() -> str | None:
    for name in (os.environ.get("CLANG_BIN"), "clang", "clang-14", "clang-15", "clang-16"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def cythonize(c_file: Path) -> None:
    sources = (PYX, PYX.with_suffix(".pxd"), Path(__file__))  # the .pxd declares what other modules cimport
    if c_file.exists() and c_file.stat().st_mtime >= max(path.stat().st_mtime for path in sources):
        return
    c_file.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "cython", "-3"]
    for key, value in DIRECTIVES.items():
        cmd += ["-X", f"{key}={value}"]
    cmd += ["-o", str(c_file), str(PYX)]
    subprocess.run(cmd, check=True, cwd=ROOT)


def build(variant: str, clang: str, force: bool) -> Path:
    target = so_path(variant)
    c_file = OUT / "src" / "_protocol.c"
    cythonize(c_file)
    if not force and target.exists() and target.stat().st_mtime >= c_file.stat().st_mtime:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    cmd = [
        clang, "-shared", "-fPIC", "-O1", "-g", *FLAGS[variant],
        f"-I{sysconfig.get_paths()['include']}",
        "-o", str(tmp), str(c_file),
    ]
    subprocess.run(cmd, check=True, cwd=ROOT)
    # Prove the instrumentation is there (the sancov counters of libFuzzer).
    nm = subprocess.run(["nm", "-D", "--undefined-only", str(tmp)], capture_output=True, text=True)
    if nm.returncode == 0 and "__sanitizer_cov" not in nm.stdout:
        raise RuntimeError(f"{tmp} has no sanitizer-coverage hooks")
    os.replace(tmp, target)
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=["asan", "cov", "all"], default="all")
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args()
    variants = ["asan", "cov"] if args.variant == "all" else [args.variant]
    clang = find_clang()
    ok = False
    for variant in variants:
        if clang is None:
            print(f"{variant} FAILED no clang on PATH (apt-get install clang)")
            continue
        try:
            print(f"{variant} {build(variant, clang, args.force)}")
            ok = True
        except (subprocess.CalledProcessError, RuntimeError, OSError) as exc:
            print(f"{variant} FAILED {exc}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
