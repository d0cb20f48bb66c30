# Every target sets up what it needs: `make run` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test check bench fmt clean browser wrk

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/reelhook serve

# tests/browser drive Debian's chromium through the playwright wheel (`playwright install` downloads a browser of its
# own and is never run). apt installs it only as root on a machine that has apt-get; anywhere else the browser tests
# skip and say how to enable them. The stamp is written once chromium is there, so this runs apt at most once.
BROWSER_STAMP := $(VENV)/.browser

$(BROWSER_STAMP): $(STAMP)
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing chromium with apt-get for tests/browser"; \
		{ apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
			|| echo "could not install chromium: tests/browser will be skipped (see their reason)"; \
	fi
	@if [ -x /usr/bin/chromium ]; then touch $@; fi

browser: $(BROWSER_STAMP)

test: $(STAMP) browser wrk
	$(BIN)/pytest -q

check: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

# The ingest benchmark loads the server with wrk (Debian's package), which costs a small fraction of what the server
# spends per request; the httpx generator in bench/ costs more than a bare route does, so its ratios are its own limit.
# apt installs wrk only as root on a machine that has apt-get; anywhere else bench/ falls back to the httpx generator
# and marks those results as generator-limited, and tests/bench skips its wrk test. `make bench BENCH_ARGS="ingest
# --quick"` runs one benchmark, small.
wrk:
	@if ! command -v wrk >/dev/null && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing wrk with apt-get for make bench"; \
		{ apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; } \
			|| echo "could not install wrk: the ingest benchmark falls back to the httpx generator"; \
	fi
	@command -v wrk >/dev/null || echo "wrk is missing (apt-get install wrk, as root): make bench's ingest ratios will be generator-limited"

bench: $(STAMP) wrk
	$(BIN)/python -m bench $(BENCH_ARGS)

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
