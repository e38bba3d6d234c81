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
# make test-py3.15 -- the whole suite on CPython 3.15 (Debian sid's, .deps/python3.15), the
#                     driver installed from the sdist, nodes on sid's libdqlite 1.18.7
# make test-py3.14, test-py3.13, test-py3.12 -- the codec, driver and dialect tests there
# make fuzz -- coverage-guided fuzzing of the compiled codec (atheris, ASan build) for FUZZ_TIME
#              seconds, both targets in parallel (make fuzz FUZZ_TIME=600); see fuzz/

PYTEST_ARGS ?=
# SQLAlchemy's dialect compliance suite: its own pytest run (own plugin and config).
COMPLIANCE_ARGS ?= -q

BENCH_ARGS ?=
# The benchmark needs the test extra's SQLAlchemy and the bench extra's tools.
BENCH_EXTRAS = test,bench

.PHONY: test build bench bench-micro clean test-1.18 test-1.18.7 test-sqlalchemy-2.0 go-bench dist test-wheel \
	test-pythons test-py3.15 test-py3.14 test-py3.13 test-py3.12 deps-1.18.7 deps-py3.14 deps-py3.15

build:
	@scripts/bootstrap.sh

test: build
	scripts/rerun-after-node-crash.sh .venv/bin/python -m pytest $(PYTEST_ARGS)
	scripts/rerun-after-node-crash.sh .venv/bin/python -m pytest tests/compliance $(COMPLIANCE_ARGS)
	@$(MAKE) --no-print-directory test-1.18
	@# Independent stages, two at a time (own venvs and folders; nodes take free ports).
	@$(MAKE) --no-print-directory -j2 --output-sync=target test-1.18.7 test-wheel test-pythons \
		SIDE_BY_SIDE_ARGS="$(SIDE_BY_SIDE)"
	@$(MAKE) --no-print-directory test-sqlalchemy-2.0

# What make test leaves out of the stages it runs side by side: a test whose 0.2 s
# per-answer timeout the COMMIT of its 150,000-row batch misses on a 2-CPU machine
# running two stages (seen on CPython 3.14 with 1.18.7); the first run above has it.
SIDE_BY_SIDE = --deselect tests/test_transactions.py::test_executemany_longer_than_the_timeout_completes
SIDE_BY_SIDE_ARGS ?=

# The second server version: tests that run no node (codec, fake servers) ran above.
test-1.18: build
	@scripts/fetch-dqlite.sh 1.18
	DQLITE_SERVER=1.18 scripts/rerun-after-node-crash.sh .venv/bin/python -m pytest -m "not server_independent" $(PYTEST_ARGS)
	DQLITE_SERVER=1.18 scripts/rerun-after-node-crash.sh .venv/bin/python -m pytest tests/compliance $(COMPLIANCE_ARGS)

# The third: Debian sid's (forky's) libdqlite 1.18.7.
test-1.18.7: build deps-1.18.7
	DQLITE_SERVER=1.18.7 scripts/rerun-after-node-crash.sh .venv/bin/python -m pytest -m "not server_independent" $(SIDE_BY_SIDE_ARGS) $(PYTEST_ARGS)
	DQLITE_SERVER=1.18.7 scripts/rerun-after-node-crash.sh .venv/bin/python -m pytest tests/compliance $(COMPLIANCE_ARGS)

# The private server and Pythons, each fetched once even when stages run side by side.
.PHONY: deps-1.18.7 deps-py3.14 deps-py3.15
deps-1.18.7:
	@scripts/fetch-dqlite.sh 1.18.7
deps-py3.14 deps-py3.15: deps-py%:
	@scripts/fetch-python.sh $*

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
	scripts/test-installed.sh $(WHEEL_VENV) "$$(ls dist/dqlite-*-cp311-*.whl)" -q $(INSTALLED_TESTS) $(SIDE_BY_SIDE_ARGS) $(PYTEST_ARGS)

# Other CPythons: the sdist installed by pip (which builds it for that interpreter) in a
# fresh venv, as a user would. 3.14 and 3.15 are Debian sid's, unpacked and patched into
# .deps/python3.X by scripts/fetch-python.sh; their nodes run sid's libdqlite 1.18.7 (the
# same glibc; named by path: the installed plugin has no checkout to look in). 3.12 and
# 3.13 are pyenv's (skipped, saying so, on a machine without them), with the system
# libdqlite. The driver must build without a warning on 3.15 (-Werror).
SDIST = $$(ls dist/dqlite-*.tar.gz)
PY_CORE_TESTS = tests/test_installed.py tests/test_codec.py tests/test_malformed.py tests/test_smoke.py \
	tests/test_cursor.py tests/test_types.py tests/test_transactions.py tests/test_errors.py \
	tests/test_dbapi20.py tests/test_aio.py tests/test_server_versions.py \
	tests/test_sqlalchemy_dialect.py tests/test_sqlalchemy_orm.py tests/test_sqlalchemy_alembic.py
PYENV_ROOT ?= /root/.pyenv
test-pythons: test-py3.15 test-py3.14 test-py3.13 test-py3.12
test-py3.15: $(DIST_STAMP) deps-py3.15 deps-1.18.7
	PYTHON=.deps/python3.15/usr/bin/python3.15 CPPFLAGS="-idirafter $(CURDIR)/.deps/python3.15/usr/include" \
	PACKAGE_CPPFLAGS=-Werror DQLITE_SERVER=$(CURDIR)/.deps/dqlite-1.18.7 COMPLIANCE_ARGS="$(COMPLIANCE_ARGS)" \
	scripts/test-installed.sh .venv-py3.15 "$(SDIST)" -q $(INSTALLED_TESTS) $(SIDE_BY_SIDE_ARGS) $(PYTEST_ARGS)
test-py3.14: $(DIST_STAMP) deps-py3.14 deps-1.18.7
	PYTHON=.deps/python3.14/usr/bin/python3.14 CPPFLAGS="-idirafter $(CURDIR)/.deps/python3.14/usr/include" \
	DQLITE_SERVER=$(CURDIR)/.deps/dqlite-1.18.7 scripts/test-installed.sh .venv-py3.14 "$(SDIST)" -q $(PY_CORE_TESTS) $(SIDE_BY_SIDE_ARGS) $(PYTEST_ARGS)
test-py3.13 test-py3.12: test-py%: $(DIST_STAMP)
	@py=$$(ls -d $(PYENV_ROOT)/versions/$*.*/bin/python$* 2>/dev/null | sort -V | tail -n 1); \
	if [ -z "$$py" ]; then echo "make test-py$*: no CPython $* under $(PYENV_ROOT)/versions: skipped"; exit 0; fi; \
	PYTHON=$$py scripts/test-installed.sh .venv-py$* "$(SDIST)" -q $(PY_CORE_TESTS) $(SIDE_BY_SIDE_ARGS) $(PYTEST_ARGS)

# The SQLAlchemy dialect on the newest SQLAlchemy 2.0 (.venv has the newest 2.1).
SA20_VENV = .venv-sqlalchemy20
test-sqlalchemy-2.0: build
	@VENV=$(SA20_VENV) PIP_EXTRA="SQLAlchemy[asyncio]<2.1" scripts/bootstrap.sh
	scripts/rerun-after-node-crash.sh $(SA20_VENV)/bin/python -m pytest -q tests/test_sqlalchemy_*.py
	scripts/rerun-after-node-crash.sh $(SA20_VENV)/bin/python -m pytest tests/compliance $(COMPLIANCE_ARGS)

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
