"""Run every chapter the way Colab does: fresh environment, the hidden install cell, then every cell.

    python scripts/colab_check.py            # all chapters (make colab-check)
    python scripts/colab_check.py ch01       # chapters whose file name contains "ch01"

What it does, and why each step is there:

1. A fresh virtual environment with only Jupyter in it (ipykernel + nbclient), so that everything
   a chapter imports must come from its own install cell, as on a fresh Colab runtime. (Colab has
   more preinstalled; this is the stricter test.)
2. A local clone of this repository's committed HEAD, with the configured branch
   (`repository.branch` in _config.yml) pointing at it. Uncommitted changes are NOT tested.
3. Each chapter's first code cell (the install cell) has its `git+<repository URL>@<branch>`
   replaced by `git+file://<clone>@<branch>`; the script fails if the cell does not contain the
   configured URL, so the test also guards the URL.
4. A preamble cell fakes Colab (`sys.modules["google.colab"]`, which is what the install cell
   tests), checks that the kernel is the fresh environment's Python and that `pclib` is not
   importable yet; a final cell checks that `pclib` was imported from the installed package.
5. The notebook runs top to bottom in a scratch working directory with PYTHONPATH removed. Any
   error, or any printed check ending in ": False", fails the run.

Network: pip installs pclib's dependencies from PyPI (jax, optax, matplotlib, ...), which takes a few
minutes. The environment (_build/colab-venv) is made anew for every run, so the first chapter's install
cell installs every dependency; later chapters of the same run find them installed (pclib itself is
uninstalled after each chapter). Pass --reuse to keep the previous run's environment (faster, weaker).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
REPO_URL = CONFIG["repository"]["url"].rstrip("/")
BRANCH = CONFIG["repository"]["branch"]
VENV = ROOT / "_build" / "colab-venv"
KERNEL = "pc-colab-sim"

PREAMBLE = """\
# colab_check.py preamble: make this kernel look like a fresh Colab runtime.
import sys, types, importlib.util
assert sys.prefix == {venv!r}, f"kernel runs {{sys.executable}}, not the fresh environment"
assert importlib.util.find_spec("pclib") is None, "pclib is importable before the install cell ran"
colab = types.ModuleType("google.colab")  # what the install cell tests for
colab.output = types.ModuleType("google.colab.output")  # JAX imports it when it sees google.colab
sys.modules.update({{"google.colab": colab, "google.colab.output": colab.output}})
"""

POSTAMBLE = """\
# colab_check.py: pclib came from the install cell, not from a checkout on the path.
import pclib, sys
assert pclib.__file__.startswith(sys.prefix), pclib.__file__
print("pclib from", pclib.__file__)
"""

# The runner executes inside the fresh environment, so nbclient there starts that environment's kernel.
RUNNER = """\
import json, sys, nbformat
from nbclient import NotebookClient
nb = nbformat.read(sys.argv[1], as_version=4)
NotebookClient(nb, timeout=1800, kernel_name=sys.argv[3], resources={"metadata": {"path": sys.argv[2]}}).execute()
nbformat.write(nb, sys.argv[1])
"""


def run(cmd: list[str], **kw) -> None:
    print("+", " ".join(map(str, cmd)), flush=True)
    subprocess.run(cmd, check=True, **kw)


def make_venv(reuse: bool) -> Path:
    python = VENV / "bin" / "python"
    if not reuse and VENV.exists():
        shutil.rmtree(VENV)
    if not python.exists():
        run([sys.executable, "-m", "venv", str(VENV)])
        run([str(python), "-m", "pip", "install", "-q", "--upgrade", "pip"])
        run([str(python), "-m", "pip", "install", "-q", "ipykernel", "nbclient", "nbformat"])
        run([str(python), "-m", "ipykernel", "install", "--sys-prefix", "--name", KERNEL])
    else:  # a kept environment: drop pclib so the install cell has to install it again
        run([str(python), "-m", "pip", "uninstall", "-q", "-y", "pc-textbook"])
    return python


def clone(dest: Path) -> Path:
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], check=True,
                          capture_output=True, text=True).stdout.strip()
    run(["git", "clone", "-q", "--no-checkout", str(ROOT), str(dest)])
    run(["git", "-C", str(dest), "checkout", "-q", "-B", BRANCH, head])
    return dest


def colab_notebook(md: Path, clone_dir: Path, venv_prefix: str):
    import jupytext
    import nbformat

    nb = jupytext.read(md)
    first = next(c for c in nb.cells if c.cell_type == "code")
    remote = f"git+{REPO_URL}@{BRANCH}"
    if remote not in first.source:
        raise SystemExit(f"{md.name}: the first code cell does not install {remote}")
    first.source = first.source.replace(remote, f"git+file://{clone_dir}@{BRANCH}")
    nb.cells.insert(0, nbformat.v4.new_code_cell(PREAMBLE.format(venv=venv_prefix)))
    nb.cells.append(nbformat.v4.new_code_cell(POSTAMBLE))
    nb.metadata["kernelspec"] = {"name": KERNEL, "display_name": KERNEL, "language": "python"}
    return nb


def check_outputs(nb) -> list[str]:
    problems = []
    for i, c in enumerate(nb.cells):
        for o in c.get("outputs", []):
            text = "".join(o.get("text", ""))
            if re.search(r": False$", text, re.M):
                problems.append(f"cell {i}: a printed check failed:\n{text}")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pattern", nargs="?", default="", help="only chapters whose file name contains this")
    ap.add_argument("--reuse", action="store_true", help="keep the previous run's environment (faster, weaker)")
    args = ap.parse_args(argv)

    import jupytext
    import nbformat

    chapters = [p for p in sorted((ROOT / "book" / "chapters").glob("*.md"))
                if args.pattern in p.name and "jupytext" in jupytext.read(p).metadata]
    if not chapters:
        raise SystemExit(f"no chapter matches {args.pattern!r}")
    t0 = time.perf_counter()
    python = make_venv(args.reuse)
    prefix = subprocess.run([str(python), "-c", "import sys; print(sys.prefix)"], check=True,
                            capture_output=True, text=True).stdout.strip()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["JUPYTER_PATH"] = str(VENV / "share" / "jupyter")
    times: dict[str, float] = {"environment": time.perf_counter() - t0}
    failures = []
    with tempfile.TemporaryDirectory(prefix="colab-check-") as tmp:
        clone_dir = clone(Path(tmp) / "repo")
        for md in chapters:
            workdir = Path(tmp) / "content" / md.stem  # Colab's working directory is /content
            workdir.mkdir(parents=True)
            path = workdir / (md.stem + ".ipynb")
            nbformat.write(colab_notebook(md, clone_dir, prefix), path)
            print(f"executing {md.name} as on Colab ...", flush=True)
            t = time.perf_counter()
            proc = subprocess.run([str(python), "-c", RUNNER, str(path), str(workdir), KERNEL], env=env, cwd=workdir)
            times[md.stem] = time.perf_counter() - t
            # the next chapter must not find this chapter's install
            subprocess.run([str(python), "-m", "pip", "uninstall", "-q", "-y", "pc-textbook"], check=True)
            if proc.returncode != 0:
                failures.append(f"{md.name}: execution failed (see the traceback above)")
                continue
            problems = check_outputs(nbformat.read(path, as_version=4))
            failures += [f"{md.name}: {p}" for p in problems]
            print(f"  {md.name}: {'ok' if not problems else 'FAILED'} in {times[md.stem]:.0f} s", flush=True)
    times["total"] = time.perf_counter() - t0
    print(json.dumps({k: round(v, 1) for k, v in times.items()}, indent=1))
    for f in failures:
        print("FAILED:", f)
    print(f"colab check: {len(chapters) - len({f.split(':')[0] for f in failures})} passed, "
          f"{len({f.split(':')[0] for f in failures})} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
