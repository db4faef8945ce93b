"""The book's own invariants: paired sources in sync, chapters executed, one repository URL."""

import json
import re
from pathlib import Path

import jupytext
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
REPO_URL = CONFIG["repository"]["url"]
CHAPTERS = sorted((ROOT / "book" / "chapters").glob("*.md"))


def _cells(nb):
    return [(c.cell_type, c.source.strip(), tuple(c.metadata.get("tags", []))) for c in nb.cells]


def test_there_are_chapters():
    assert CHAPTERS, "no chapters found under book/chapters"


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_pair_in_sync(md):
    """The committed .ipynb holds exactly the cells of its MyST source (run `make execute` after editing)."""
    ipynb = md.with_suffix(".ipynb")
    assert ipynb.exists(), f"{ipynb.name} is missing: run `make execute`"
    src, out = _cells(jupytext.read(md)), _cells(jupytext.read(ipynb))
    assert len(src) == len(out), f"{md.name} has {len(src)} cells but {ipynb.name} has {len(out)}: run `make execute`"
    for i, (a, b) in enumerate(zip(src, out)):
        assert a == b, f"cell {i} of {ipynb.name} differs from {md.name}: run `make execute`"


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_is_executed_without_errors(md):
    nb = json.loads(md.with_suffix(".ipynb").read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    counts = [c["execution_count"] for c in code]
    assert all(counts) and counts == sorted(counts), "every code cell must be executed once, in order"
    for c in code:
        for o in c.get("outputs", []):
            assert o["output_type"] != "error", f"a stored error output: {o.get('ename')}"
            text = "".join(o.get("text", []))
            assert not re.search(r": False$", text, re.M), f"a printed check failed:\n{text}"


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_colab_install_cell(md):
    """The first code cell installs pclib from this repository on Colab only, and is hidden in the HTML."""
    nb = jupytext.read(md)
    first = next(c for c in nb.cells if c.cell_type == "code")
    assert "google.colab" in first.source
    assert f"git+{REPO_URL}@{CONFIG['repository']['branch']}" in first.source
    assert "remove-cell" in first.metadata.get("tags", [])


def test_toc_lists_every_chapter():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = {c["file"] for part in toc["parts"] for c in part["chapters"]}
    for md in CHAPTERS:
        assert f"book/chapters/{md.stem}" in files, f"{md.name} is not in _toc.yml"


def test_readme_uses_the_configured_repository():
    readme = (ROOT / "README.md").read_text()
    assert REPO_URL in readme
    assert "make test" in readme and "make book" in readme


def test_live_widgets_are_hidden_in_html():
    """A cell that builds a live widget must not render a dead widget in the static HTML."""
    for md in CHAPTERS:
        for c in jupytext.read(md).cells:
            if c.cell_type == "code" and "widgets.live(" in c.source:
                assert "remove-output" in c.metadata.get("tags", []), f"{md.name}: untagged live widget"
