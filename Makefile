# The README's two commands are `make book` and `make test`.
PYTHON ?= python
NBVAL = --nbval --nbval-current-env --nbval-sanitize-with nbval_sanitize.cfg

.PHONY: test pytest nbval book execute bench clean

test: pytest nbval book  ## every test: library + theorems + book consistency, nbval on every chapter, strict build

pytest:
	$(PYTHON) -m pytest tests -q

nbval:
	$(PYTHON) -m pytest $(NBVAL) book -q -p no:cacheprovider

book:  ## the HTML book in _build/html; any warning fails the build
	jupyter-book build . -n -W --keep-going

execute:  ## re-execute every chapter from its .md source and refresh the committed .ipynb outputs
	$(PYTHON) scripts/execute_chapters.py

bench:  ## time PC against backprop and write book/bench/bench.{json,md} (the performance appendix shows them)
	$(PYTHON) -m pclib.bench --out book/bench

clean:
	rm -rf _build
