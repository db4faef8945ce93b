"""The bootstrap behind `make book` / `make test` (scripts/bootstrap.py), with a fake pip: fast.

A real clean-clone `make book` installs everything from pip's wheel cache, which is too slow for
every CI run; these tests check its logic: the stamp, re-use, re-install on a changed pin, the
one-line messages for missing system tools, and that PYTHON=... skips the environment.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bootstrap", ROOT / "scripts" / "bootstrap.py")
bootstrap = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bootstrap)


@pytest.fixture
def repo(tmp_path):
    for name in bootstrap.PINNED:
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


class FakeRunner:
    """Records commands; `python -m venv DIR` creates DIR's interpreter, pip does nothing."""

    def __init__(self):
        self.calls: list[list[str]] = []

    def __call__(self, cmd):
        cmd = list(cmd)
        self.calls.append(cmd)
        if cmd[1:3] == ["-m", "venv"]:
            py = bootstrap.venv_python(Path(cmd[3]))
            py.parent.mkdir(parents=True)
            py.touch()

    def kinds(self):
        return ["venv" if c[1:3] == ["-m", "venv"] else "pip " + " ".join(c[4:6]) for c in self.calls]


def test_fresh_then_reused_then_reinstalled_on_a_changed_pin(repo):
    run = FakeRunner()
    assert bootstrap.ensure_env(Path(".venv"), root=repo, run=run)
    assert run.kinds() == ["venv", "pip -q --upgrade", "pip -q -r"]
    assert str(repo / "requirements.txt") in run.calls[-1] and str(repo) in run.calls[-1]
    stamp = repo / ".venv" / bootstrap.STAMP
    assert stamp.read_text().strip() == bootstrap.requirements_hash(repo)

    run.calls.clear()
    assert not bootstrap.ensure_env(Path(".venv"), root=repo, run=run), "a second run must reuse the environment"
    assert run.calls == []

    (repo / "requirements.txt").write_text((repo / "requirements.txt").read_text().replace("numpy==", "numpy>="))
    assert bootstrap.ensure_env(Path(".venv"), root=repo, run=run), "a changed pin must re-install"
    assert run.kinds() == ["pip -q --upgrade", "pip -q -r"], "the existing venv is kept, only pip runs"
    assert stamp.read_text().strip() == bootstrap.requirements_hash(repo)

    run.calls.clear()
    (repo / "pyproject.toml").write_text((repo / "pyproject.toml").read_text() + "\n# changed\n")
    assert bootstrap.ensure_env(Path(".venv"), root=repo, run=run), "pyproject.toml is part of the key"


def test_a_failed_install_leaves_no_stamp(repo):
    def failing(cmd):
        FakeRunner()(cmd)
        if "-r" in cmd:
            raise subprocess.CalledProcessError(1, cmd)

    with pytest.raises(subprocess.CalledProcessError):
        bootstrap.ensure_env(Path(".venv"), root=repo, run=failing)
    assert not (repo / ".venv" / bootstrap.STAMP).exists(), "the next run must try again"


def test_missing_tools_say_what_to_install_in_one_line(repo, monkeypatch):
    monkeypatch.setenv("BOOK_CHROMIUM", str(repo / "no-such-chromium"))
    msgs = bootstrap.missing_tools(["npm", "chromium"], root=repo, which=lambda name: None)
    assert len(msgs) == 2
    for msg, pkg in zip(msgs, ("npm", "chromium")):
        assert "\n" not in msg and f"apt-get install -y {pkg}" in msg
    # npm is needed only until MathJax is in _vendor/
    (repo / "_vendor" / "mathjax").mkdir(parents=True)
    (repo / "_vendor" / "mathjax" / "tex-mml-chtml.js").touch()
    assert bootstrap.missing_tools(["npm"], root=repo, which=lambda name: None) == []
    assert bootstrap.missing_tools(["npm", "chromium"], root=ROOT.parent / "nowhere", which=lambda n: "/bin/" + n) == []


def test_main_fails_with_the_message_only(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(bootstrap.shutil, "which", lambda name: None)
    monkeypatch.setenv("BOOK_CHROMIUM", str(tmp_path / "none"))
    assert bootstrap.main(["--need", "chromium"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bootstrap: Chromium is needed")


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_make_bootstraps_unless_python_is_given():
    dry = lambda *a: subprocess.run(["make", "-n", *a], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    plain = dry("book")
    assert "scripts/bootstrap.py --venv .venv --need npm" in plain
    assert ".venv/bin/python scripts/fetch_mathjax.py" in plain and "build . -n -W --keep-going" in plain
    given = dry("book", "PYTHON=/opt/env/bin/python")
    assert "--venv" not in given and "/opt/env/bin/python scripts/fetch_mathjax.py" in given
    assert "--need npm,chromium" in dry("test", "PYTHON=/opt/env/bin/python")
