# schoolgate: `make run` starts the appliance on the embedded default config; `make test` runs every check.
# Both set up everything they need (virtualenv, packages) on a fresh machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DATA   ?= $(CURDIR)/.data
PYTEST_ARGS ?=
# Tools the tests drive for real: curl as a client, unshare for private /etc/hosts and namespaces,
# nft and ip for the gateway's ruleset and network-namespace tests; systemd's tools to verify the
# units and enable them offline, shellcheck for deploy/*.sh; promtool (and prometheus, same
# package) for the alert rules and the dashboards' queries; tcpdump (and its libpcap) for the
# sniffer's capture prefilter; debootstrap and systemd-nspawn to install and boot a Debian 13 for
# the installer's own test (tests/e2e/test_installed_gateway.py); DejaVu fonts for the template
# pictures of tests/test_template_precision.py (drawn as adversarial pass a10 drew them); Debian's
# chromium, which Playwright drives through the DSL's console (tests/e2e/test_console_e2e.py).
# iptables carries the fast path's queue rule (the NFQUEUE target: docs/gateway.md). 7-Zip and
# gcab write the archives of tests/test_archive_methods.py (7z coders, ZIP methods, cabinets).
TEST_SYSTEM_DEPS := curl lz4 7zz:7zip gcab unshare:util-linux nft:nftables iptables-nft:iptables ip:iproute2 \
	systemd-analyze:systemd systemctl:systemd shellcheck promtool:prometheus tcpdump \
	debootstrap systemd-nspawn:systemd-container \
	/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf:fonts-dejavu-core chromium

.PHONY: help run test test-fast lint deps lock lock-check typecheck bench venv sysdeps clean

help:
	@echo "make run    set up and start schoolgate on the embedded default config (data in $(DATA))"
	@echo "make test   set up and run lint, type checks and every test"
	@echo "make bench  set up and run the benchmarks (figures printed and written to build/bench.json)"
	@echo "make lock   re-resolve the dependencies (uv.lock, requirements/*.txt) from the index"

# The interpreter is found once per venv: python3.13/3.12 on PATH, then pyenv versions.
$(VENV)/bin/python:
	@py=$$(deploy/find-python.sh) || exit 1; \
	echo "creating $(VENV) with $$py"; \
	"$$py" -m venv $(VENV)

# Exactly the locked artifacts (requirements/*.txt, hash-checked), never the day's index.
LOCKED := requirements/build.txt requirements/runtime.txt requirements/dev.txt
# What packages published only as source build against: netfilterqueue links libnetfilter_queue.
# libarchive reads 7z archives and lz4 streams (schoolgate.endpoints.libarchive, through ctypes).
BUILD_SYSTEM_DEPS := /usr/include/libnetfilter_queue/libnetfilter_queue.h:libnetfilter-queue-dev \
	/usr/lib/$(shell uname -m)-linux-gnu/libarchive.so.13:libarchive13

$(STAMP): $(VENV)/bin/python pyproject.toml $(LOCKED)
	@deploy/system-deps.sh $(BUILD_SYSTEM_DEPS)
	deploy/install-locked.sh $(BIN)/python requirements/dev.txt --editable
	@touch $@

venv: $(STAMP)

sysdeps:
	@deploy/system-deps.sh $(TEST_SYSTEM_DEPS)

run: $(STAMP)
	SCHOOLGATE_DATA_DIR=$(DATA) $(BIN)/schoolgate run

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Every import is a declared dependency (and every declared dependency is imported), for the code
# and for the tests and benchmarks.
# The runtime code may import only runtime dependencies; the whole tree (tests and benchmarks too)
# may import the dev extra as well. An import declared nowhere (DEP001), reached only through
# another package (DEP003), or a declared package nothing imports (DEP002) fails either run.
deps: $(STAMP)
	$(BIN)/deptry filter addons
	$(BIN)/deptry filter addons tests benchmarks --exclude 'a^' \
	  --optional-dependencies-dev-groups '' 2>&1 | \
	  grep -v "groups \[''\] as development dependencies"; exit $${PIPESTATUS[0]}

# uv resolves once for every supported system (Linux x86_64/aarch64, CPython 3.12/3.13) into
# uv.lock; requirements/*.txt are its pip-installable exports with hashes. Refreshed by hand,
# never by an install: see docs/install.md ("Dependencies and the lock").
lock: $(STAMP)
	deploy/lock.sh refresh $(BIN)/python

# The committed exports are what uv.lock says, and uv.lock still satisfies pyproject.toml.
lock-check: $(STAMP)
	deploy/lock.sh check $(BIN)/python

# mypy checks the code where it lives, with the tests and benchmarks ([tool.mypy] in pyproject.toml).
typecheck: $(STAMP)
	$(BIN)/mypy

# Meta's vpdq (the C++ reference) is built only for the compatibility test; when it cannot be
# built here the test says so and skips, and schoolgate itself is unaffected.
VPDQ_REF := $(VENV)/.vpdq-reference-stamp
$(VPDQ_REF): $(STAMP)
	@deploy/vpdq-reference.sh $(BIN)/python || echo "warning: vpdq reference not built; tests/test_vpdq_reference.py will skip"
	@touch $@

# The unit tests share nothing and run on TEST_WORKERS processes. The end-to-end suites (`slow`:
# network namespaces, real processes, timings) mostly wait on processes and sockets, so they run
# on TEST_WORKERS processes too, a file to a process (`--dist loadfile`): a file's tests keep their
# order and shared fixtures, and every namespace, port and install root is per-run already.
TEST_WORKERS ?= 2
test: sysdeps lint deps lock-check typecheck $(VPDQ_REF)
	$(BIN)/pytest -m "not slow" -n $(TEST_WORKERS) $(PYTEST_ARGS)
	$(BIN)/pytest -m slow -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/pytest -m "not slow" -n $(TEST_WORKERS) $(PYTEST_ARGS)

bench: $(STAMP)
	@mkdir -p build
	$(BIN)/python -m benchmarks --out build/bench.json

clean:
	rm -rf build .mypy_cache .pytest_cache .ruff_cache
