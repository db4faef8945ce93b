"""Publishing invariants, fast (no build): the workflows build strictly and deploy, every chapter's
Colab launch link points at its committed notebook on the deployed branch, the README names the
published URL, and MathJax is local. The browser test (browser_tests/) checks the built HTML itself."""

import re
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
REPO = CONFIG["repository"]
CHAPTERS = sorted((ROOT / "book" / "chapters").glob("*.md"))
WORKFLOWS = ROOT / ".github" / "workflows"


def _workflow(name):
    wf = yaml.safe_load((WORKFLOWS / name).read_text())
    # YAML 1.1 (PyYAML) reads the key `on` as the boolean True
    wf["on"] = wf.pop(True, wf.get("on"))
    return wf


def _steps(wf):
    return [s for job in wf["jobs"].values() for s in job.get("steps", [])]


def _runs(wf):
    return "\n".join(s.get("run", "") for s in _steps(wf))


def _uses(wf, action):
    return [s for s in _steps(wf) if s.get("uses", "").split("@")[0] == action]


def owner_repo():
    m = re.fullmatch(r"https://github\.com/([^/]+)/([^/]+?)/?", REPO["url"])
    assert m, f"repository.url in _config.yml must be https://github.com/<owner>/<repo>, not {REPO['url']}"
    return m.group(1), m.group(2)


def pages_url():
    owner, repo = owner_repo()
    return f"https://{owner.lower()}.github.io/{repo}/"


def colab_url(md: Path) -> str:
    """The launch URL as sphinx-book-theme builds it: <colab_url>/github/<org>/<repo>/blob/<branch>/<path>.ipynb."""
    owner, repo = owner_repo()
    rel = md.with_suffix(".ipynb").relative_to(ROOT / REPO.get("path_to_book", "")).as_posix()
    return f"{CONFIG['launch_buttons']['colab_url'].rstrip('/')}/github/{owner}/{repo}/blob/{REPO['branch']}/{rel}"


def test_book_workflow_builds_strictly_and_deploys():
    wf = _workflow("book.yml")
    assert REPO["branch"] in wf["on"]["push"]["branches"], "the book must be built on pushes to the configured branch"
    build = re.search(r"jupyter-book build (\S+)(.*)", _runs(wf))
    assert build and build.group(1) == ".", "no `jupyter-book build .` step"
    flags = build.group(2).split()
    for flag in ("-n", "-W", "--keep-going"):
        assert flag in flags, f"the book build must use {flag} (nitpicky, warnings are errors, all reported)"
    assert "fetch_mathjax.py" in _runs(wf), "the build needs the local MathJax"
    assert "vendor_plotly.py" in _runs(wf), "the explorable figures need the local plotly.js"
    reports = [s for s in _uses(wf, "actions/upload-artifact") if s["with"]["path"] == "_build/html/reports"]
    assert reports and reports[0].get("if") == "failure()", "upload _build/html/reports when the build fails"
    assert _uses(wf, "actions/upload-pages-artifact")[0]["with"]["path"] == "_build/html"
    assert _uses(wf, "actions/deploy-pages"), "no deploy-pages step"
    assert wf["permissions"] == {"contents": "read", "pages": "write", "id-token": "write"}
    assert "browser_tests" in _runs(wf), "the deployed HTML must pass the browser test"


def test_scheduled_workflow_reexecutes_and_checks_links():
    wf = _workflow("scheduled.yml")
    assert wf["on"]["schedule"][0]["cron"].split()[4] != "*", "the schedule should be weekly"
    assert "workflow_dispatch" in wf["on"]
    runs = _runs(wf)
    assert "make execute" in runs and "make nbval" in runs and "make colab-check" in runs
    assert "make linkcheck" in runs
    make = (ROOT / "Makefile").read_text()
    assert re.search(r"^linkcheck:.*\n\t\$\(JUPYTER_BOOK\) build \. --builder linkcheck", make, re.M)
    assert re.search(r"^book:.*\n\t\$\(JUPYTER_BOOK\) build \. -n -W --keep-going$", make, re.M)


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_colab_launch_link_targets_the_committed_notebook(md):
    url = colab_url(md)
    assert url.endswith(f"/blob/{REPO['branch']}/book/chapters/{md.stem}.ipynb"), url
    ipynb = md.with_suffix(".ipynb")
    assert ipynb.exists(), f"{url} would open a missing notebook: run `make execute`"
    ignored = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", str(ipynb)]).returncode == 0
    assert not ignored, f"{ipynb.name} is git-ignored, so Colab could not open it from GitHub"


def test_launch_buttons_are_configured():
    assert CONFIG["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
    assert CONFIG["repository"].get("path_to_book", "") == "", "launch links assume the book is at the repository root"
    deployed = _workflow("book.yml")["on"]["push"]["branches"]
    assert REPO["branch"] in deployed, "launch links must target the branch that is published"


def test_readme_names_the_published_url_and_fork_steps():
    readme = (ROOT / "README.md").read_text()
    assert pages_url() in readme, f"README must name the published book, {pages_url()}"
    assert "fork" in readme.lower() and "_config.yml" in readme


def test_mathjax_is_local_and_pinned():
    path = CONFIG["sphinx"]["config"]["mathjax_path"]
    assert "://" not in path and path.endswith("mathjax/tex-mml-chtml.js"), "MathJax must load from the book itself"
    assert "_vendor" in CONFIG["sphinx"]["config"]["html_extra_path"]
    src = (ROOT / "scripts" / "fetch_mathjax.py").read_text()
    assert re.search(r'^VERSION = "3\.\d+\.\d+"$', src, re.M), "pin an exact MathJax 3 version"
    assert re.search(r'^INTEGRITY = "sha512-[A-Za-z0-9+/=]{88}"$', src, re.M), "pin the tarball's sha512"


def test_requirements_pin_the_browser_client():
    reqs = (ROOT / "requirements.txt").read_text()
    assert re.search(r"^playwright==\d+\.\d+\.\d+$", reqs, re.M)
    ci = (ROOT / ".ci" / "run").read_text()
    assert "chromium" in ci and "PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1" in ci and "playwright install" not in ci


def test_ci_runs_the_browser_test():
    make = (ROOT / "Makefile").read_text()
    test_deps = re.search(r"^test:([^#\n]*)", make, re.M).group(1).split()
    assert "browser" in test_deps and test_deps.index("browser") > test_deps.index("book")
    assert re.search(r"^browser: book\b.*\n\t.*pytest browser_tests", make, re.M)
    assert (ROOT / ".ci" / "run").read_text().strip().endswith("make test")
