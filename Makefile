# Every target sets up what it needs: `make run` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test check bench fmt clean browser

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

test: $(STAMP) browser
	$(BIN)/pytest -q

check: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m bench

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
