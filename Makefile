# make test  -- everything a fresh Debian machine needs, then the whole test suite
# make bench -- the benchmark against a local cluster it starts itself
#               (options: make bench BENCH_ARGS="--workloads W1,W2 --rounds 1")
#               (with go-dqlite's database/sql driver as a peer in W1, W2, W3 and W6)
# make bench-micro -- pytest-benchmark cases for the compiled codec alone (no cluster)
# make test-sqlalchemy-2.0 -- the SQLAlchemy dialect's tests on SQLAlchemy 2.0 (own venv)
# make test-1.18 -- the integration tests against Debian trixie's libdqlite 1.18.1
#                   (unpacked into .deps/dqlite-1.18 by scripts/fetch-dqlite.sh 1.18)
# make test-1.18.7 -- the same against Debian sid's libdqlite 1.18.7 (.deps/dqlite-1.18.7)
# make dist -- the sdist and a manylinux wheel in dist/ (python -m build, auditwheel)
# make test-wheel -- the driver's tests against that wheel, installed in a fresh venv
# make fuzz -- coverage-guided fuzzing of the compiled codec (atheris, ASan build) for FUZZ_TIME
#              seconds, both targets in parallel (make fuzz FUZZ_TIME=600); see fuzz/

PYTEST_ARGS ?=
# SQLAlchemy's dialect compliance suite: its own pytest run (own plugin and config).
COMPLIANCE_ARGS ?= -q

BENCH_ARGS ?=
# The benchmark needs the test extra's SQLAlchemy and the bench extra's tools.
BENCH_EXTRAS = test,bench

.PHONY: test build bench bench-micro clean test-1.18 test-1.18.7 test-sqlalchemy-2.0 go-bench dist test-wheel

build:
	@scripts/bootstrap.sh

test: build
	.venv/bin/python -m pytest $(PYTEST_ARGS)
	.venv/bin/python -m pytest tests/compliance $(COMPLIANCE_ARGS)
	@$(MAKE) --no-print-directory test-1.18
	@$(MAKE) --no-print-directory test-1.18.7
	@$(MAKE) --no-print-directory test-wheel
	@$(MAKE) --no-print-directory test-sqlalchemy-2.0

# The second server version: tests that run no node (codec, fake servers) ran above.
test-1.18: build
	@scripts/fetch-dqlite.sh 1.18
	DQLITE_SERVER=1.18 .venv/bin/python -m pytest -m "not server_independent" $(PYTEST_ARGS)
	DQLITE_SERVER=1.18 .venv/bin/python -m pytest tests/compliance $(COMPLIANCE_ARGS)

# The third: Debian sid's (forky's) libdqlite 1.18.7.
test-1.18.7: build
	@scripts/fetch-dqlite.sh 1.18.7
	DQLITE_SERVER=1.18.7 .venv/bin/python -m pytest -m "not server_independent" $(PYTEST_ARGS)
	DQLITE_SERVER=1.18.7 .venv/bin/python -m pytest tests/compliance $(COMPLIANCE_ARGS)

# The release artefacts: dist/dqlite-VERSION.tar.gz and a manylinux wheel for this Python,
# rebuilt when what goes into them changed (the stages below share one build).
DIST_STAMP = dist/.built
DIST_INPUTS = pyproject.toml setup.py MANIFEST.in LICENSE README.md \
	$(wildcard dqlite/*.py dqlite/*.pyx dqlite/*.pxd dqlite/*.pyi dqlite/py.typed sqlalchemy_dqlite/*.py)
dist: $(DIST_STAMP)
$(DIST_STAMP): $(DIST_INPUTS) | build
	@scripts/dist.sh
	@touch $@

# The wheel as users install it: a fresh venv (no Cython, no checkout on sys.path),
# the driver's, plugin's and dialect's tests against the installed package
# (not the repository's tooling: typing of the source, fuzzers, benchmark).
WHEEL_VENV = .venv-wheel
INSTALLED_TESTS = --ignore=tests/test_typing.py --ignore=tests/test_fuzz.py --ignore=tests/test_bench.py
test-wheel: $(DIST_STAMP)
	scripts/test-installed.sh $(WHEEL_VENV) "$$(ls dist/dqlite-*-cp311-*.whl)" -q $(INSTALLED_TESTS) $(PYTEST_ARGS)

# The SQLAlchemy dialect on the newest SQLAlchemy 2.0 (.venv has the newest 2.1).
SA20_VENV = .venv-sqlalchemy20
test-sqlalchemy-2.0: build
	@VENV=$(SA20_VENV) PIP_EXTRA="SQLAlchemy[asyncio]<2.1" scripts/bootstrap.sh
	$(SA20_VENV)/bin/python -m pytest -q tests/test_sqlalchemy_*.py
	$(SA20_VENV)/bin/python -m pytest tests/compliance $(COMPLIANCE_ARGS)

bench:
	@EXTRAS=$(BENCH_EXTRAS) scripts/bootstrap.sh
	@scripts/build-go-bench.sh || echo "make bench: the go-dqlite peer could not be built; running without it"
	.venv/bin/python -m bench $(BENCH_ARGS)

bench-micro:
	@EXTRAS=$(BENCH_EXTRAS) scripts/bootstrap.sh
	.venv/bin/python -m pytest bench $(PYTEST_ARGS)

clean:
	rm -rf build dist *.egg-info dqlite/*.so dqlite/_protocol.c dqlite/_sockio.c .pytest_cache

# Fuzzing (fuzz/): clang, atheris, the instrumented builds in build/fuzz/, the seed corpus.
FUZZ_TIME ?= 180
.PHONY: fuzz fuzz-setup
fuzz-setup: build
	@fuzz/setup.sh

fuzz: fuzz-setup
	.venv/bin/python fuzz/run.py --time $(FUZZ_TIME)

# make test includes a short bounded fuzz run (tests/test_fuzz.py), which needs the above.
test: fuzz-setup

# The go-dqlite peer of the benchmark (bench/go/): make test's bench smoke test runs it too.
go-bench:
	@scripts/build-go-bench.sh
test: go-bench
