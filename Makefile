# make test  -- everything a fresh Debian machine needs, then the whole test suite
# make bench -- the benchmark against a local cluster it starts itself

PYTEST_ARGS ?=

.PHONY: test build bench clean

build:
	@scripts/bootstrap.sh

test: build
	.venv/bin/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf build dist *.egg-info dqlite/*.so dqlite/_protocol.c .pytest_cache
