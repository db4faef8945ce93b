# The README's two commands are `make book` and `make test`.
PYTHON ?= python
NBVAL = --nbval --nbval-current-env --nbval-sanitize-with nbval_sanitize.cfg

.PHONY: test pytest nbval book mathjax browser colab-check linkcheck execute bench clean

test: pytest nbval book browser  ## every test: library + theorems + book consistency, nbval on every chapter, strict build, browser test

pytest:
	$(PYTHON) -m pytest tests -q

nbval:
	$(PYTHON) -m pytest $(NBVAL) book -q -p no:cacheprovider

mathjax:  ## a pinned, hash-checked local MathJax 3 in _vendor/ (npm pack; a no-op once there)
	$(PYTHON) scripts/fetch_mathjax.py

book: mathjax  ## the HTML book in _build/html; any warning fails the build
	jupyter-book build . -n -W --keep-going

browser: book  ## every HTML page in headless Chromium (/usr/bin/chromium); screenshots in _build/screenshots
	PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 $(PYTHON) -m pytest browser_tests -q -p no:cacheprovider

colab-check:  ## every chapter as on Colab: fresh venv, install cell from a local clone (slow: pip installs jax)
	$(PYTHON) scripts/colab_check.py

linkcheck: mathjax  ## check external links (needs the internet; the scheduled workflow runs it)
	jupyter-book build . --builder linkcheck

execute:  ## re-execute every chapter from its .md source and refresh the committed .ipynb outputs
	$(PYTHON) scripts/execute_chapters.py

bench:  ## time PC against backprop and write book/bench/bench.{json,md} (the performance appendix shows them)
	$(PYTHON) -m pclib.bench --out book/bench

clean:
	rm -rf _build
