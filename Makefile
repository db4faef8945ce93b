# The README's two commands are `make book` and `make test`. From a fresh clone they first create
# .venv and install the pinned requirements and pclib into it (scripts/bootstrap.py); a second run
# reuses it (a stamp holds the hash of requirements.txt + pyproject.toml, so a changed pin re-installs).
# `make ... PYTHON=/path/to/python` uses an environment you set up yourself and skips the bootstrap.
VENV ?= .venv
SYSTEM_PYTHON ?= python3
ifeq ($(origin PYTHON),undefined)
PYTHON := $(VENV)/bin/python
VENV_ARG := --venv $(VENV)
else
VENV_ARG :=
endif
BOOTSTRAP = $(SYSTEM_PYTHON) scripts/bootstrap.py $(VENV_ARG)
JUPYTER_BOOK = $(PYTHON) -c 'import sys; from jupyter_book.cli.main import main; sys.exit(main())'
NBVAL = --nbval --nbval-current-env --nbval-sanitize-with nbval_sanitize.cfg
# Two worker processes (pytest-xdist): JAX compiles on one core, so two processes keep both busy. Each
# test module, and each notebook, stays in one process (--dist loadscope; nbval needs its cells in order).
PARALLEL ?= -n 2 --dist loadscope

.PHONY: test book env env-test pytest nbval vendor mathjax browser colab-check linkcheck execute bench clean

test: env-test pytest nbval book browser  ## every test: library + theorems + book consistency, nbval on every chapter, strict build, browser test

env:  ## .venv with the pinned requirements and pclib (a no-op when current); checks npm while MathJax is missing
	@$(BOOTSTRAP) --need npm

env-test:  ## as env, and checks for Chromium up front (the browser test needs it)
	@$(BOOTSTRAP) --need npm,chromium

pytest: env
	$(PYTHON) -m pytest tests -q $(PARALLEL)

nbval: env
	$(PYTHON) -m pytest $(NBVAL) book -q -p no:cacheprovider $(PARALLEL)

vendor: mathjax  ## the book's JavaScript in _vendor/ (copied to the HTML root): MathJax, plotly.js
	$(PYTHON) scripts/vendor_plotly.py

mathjax: env  ## a pinned, hash-checked local MathJax 3 in _vendor/ (npm pack; a no-op once there)
	$(PYTHON) scripts/fetch_mathjax.py

book: env vendor  ## the HTML book in _build/html; any warning fails the build
	$(JUPYTER_BOOK) build . -n -W --keep-going

browser: book  ## every HTML page in headless Chromium (/usr/bin/chromium); screenshots in _build/screenshots
	PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 $(PYTHON) -m pytest browser_tests -q -p no:cacheprovider

colab-check: env  ## every chapter as on Colab: fresh venv, install cell from a local clone (slow: pip installs jax)
	$(PYTHON) scripts/colab_check.py

linkcheck: env vendor  ## check external links (needs the internet; the scheduled workflow runs it)
	$(JUPYTER_BOOK) build . --builder linkcheck

execute: env  ## re-execute every chapter from its .md source and refresh the committed .ipynb outputs
	$(PYTHON) scripts/execute_chapters.py

bench: env  ## time PC against backprop and write book/bench/bench.{json,md} (the performance appendix shows them)
	$(PYTHON) -m pclib.bench --out book/bench

clean:
	rm -rf _build
