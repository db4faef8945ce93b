"""Set up what `make book` and `make test` need, from a fresh clone: stdlib only, run by the system python3.

    python3 scripts/bootstrap.py --venv .venv --need npm          # what `make book` runs first
    python3 scripts/bootstrap.py --venv .venv --need npm,chromium # what `make test` runs first
    python3 scripts/bootstrap.py --need npm                       # only check tools (PYTHON=... given)

With ``--venv``: create the virtual environment if it is missing, and install the pinned
requirements and ``pclib`` (editable) into it unless its stamp file holds the hash of the current
``requirements.txt`` + ``pyproject.toml``. A second run with unchanged pins does nothing; a changed
pin re-installs. With ``--need``: check that each system tool is there, and otherwise exit with one
line saying what to install and how. npm is needed only while MathJax is not yet in ``_vendor/``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable, Sequence

ROOT = Path(__file__).resolve().parents[1]
STAMP = "pc-textbook-requirements.sha256"
PINNED = ("requirements.txt", "pyproject.toml")

# One line each: what is missing, and how to install it.
MISSING = {
    "npm": "npm (Node.js) is needed once to fetch MathJax into _vendor/: install it with "
           "`sudo apt-get install -y npm` (Debian/Ubuntu) or `brew install node` (macOS), then re-run",
    "chromium": "Chromium is needed for the browser test: install it with `sudo apt-get install -y chromium` "
                "(Debian/Ubuntu; or set BOOK_CHROMIUM to a Chromium/Chrome binary), then re-run",
    "venv": "Python's venv module is missing: install it with `sudo apt-get install -y python3-venv` "
            "(Debian/Ubuntu), or pass PYTHON=/path/to/python of an environment you set up yourself",
}

Runner = Callable[[Sequence[str]], None]


def requirements_hash(root: Path = ROOT) -> str:
    """sha256 over the files that pin the environment (requirements.txt, pyproject.toml)."""
    h = hashlib.sha256()
    for name in PINNED:
        h.update(name.encode() + b"\0" + (root / name).read_bytes() + b"\0")
    return h.hexdigest()


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _run(cmd: Sequence[str]) -> None:
    subprocess.run(list(cmd), check=True)


def ensure_env(venv: Path, *, root: Path = ROOT, base_python: str = sys.executable, run: Runner = _run) -> bool:
    """Create ``venv`` if missing and install the pinned requirements unless its stamp is current.

    Returns True if it installed. ``run`` executes a command (a fake in the tests).
    """
    venv = venv if venv.is_absolute() else root / venv
    stamp = venv / STAMP
    want = requirements_hash(root)
    if venv_python(venv).exists() and stamp.exists() and stamp.read_text().strip() == want:
        return False
    if not venv_python(venv).exists():
        try:
            import ensurepip  # noqa: F401  (Debian splits it out into python3-venv)
        except ImportError:
            sys.exit("bootstrap: " + MISSING["venv"])
        print(f"bootstrap: creating {venv.name} (a virtual environment for the book)", flush=True)
        run([base_python, "-m", "venv", str(venv)])
    py = str(venv_python(venv))
    print(f"bootstrap: installing requirements.txt and pclib into {venv.name} (reuses pip's wheel cache)", flush=True)
    stamp.unlink(missing_ok=True)
    run([py, "-m", "pip", "install", "-q", "--upgrade", "pip"])
    run([py, "-m", "pip", "install", "-q", "-r", str(root / "requirements.txt"), "-e", str(root)])
    stamp.write_text(want + "\n")
    return True


def chromium() -> str:
    return os.environ.get("BOOK_CHROMIUM", "/usr/bin/chromium")


def missing_tools(need: Sequence[str], *, root: Path = ROOT, which: Callable[[str], str | None] = shutil.which) -> list[str]:
    """The one-line messages for the tools in ``need`` that are not installed."""
    out = []
    for tool in need:
        if tool == "npm":
            if not (root / "_vendor" / "mathjax" / "tex-mml-chtml.js").exists() and which("npm") is None:
                out.append(MISSING["npm"])
        elif tool == "chromium":
            exe = chromium()
            if not (Path(exe).exists() or which(exe)):
                out.append(MISSING["chromium"])
        else:
            raise ValueError(f"unknown tool {tool!r}")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--venv", type=Path, help="create/update this virtual environment")
    ap.add_argument("--need", default="", help="comma-separated system tools to check: npm, chromium")
    args = ap.parse_args(argv)
    problems = missing_tools([t for t in args.need.split(",") if t])
    if problems:
        for p in problems:
            print("bootstrap: " + p, file=sys.stderr)
        return 1
    if args.venv is not None:
        ensure_env(args.venv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
