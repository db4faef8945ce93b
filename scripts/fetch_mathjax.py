"""Put a pinned, hash-checked MathJax 3 into _vendor/mathjax so that the HTML book renders maths offline.

    python scripts/fetch_mathjax.py        # `make book` runs it first; a no-op once it is in place

_config.yml copies _vendor/ to the HTML root (`html_extra_path`) and sets `mathjax_path` to
`../mathjax/tex-mml-chtml.js` (Sphinx resolves it from _static/), so no page loads MathJax from a CDN. The files are not committed (about 8 MB): this script fetches the npm package
with `npm pack` (the npm registry's own client), checks it against the pinned sha512 integrity, and
unpacks the parts of `es5/` that the CHTML output needs. Requires Node.js's npm on PATH.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

VERSION = "3.2.2"
INTEGRITY = "sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw=="
# What tex-mml-chtml.js loads: the combined component, TeX extensions (autoloaded), the CHTML fonts,
# the menu, and the accessibility parts the menu can switch on.
KEEP = ("es5/tex-mml-chtml.js", "es5/input/", "es5/output/chtml", "es5/ui/", "es5/a11y/", "es5/adaptors/",
        "es5/sre/", "LICENSE")

ROOT = Path(__file__).resolve().parents[1]
DEST = ROOT / "_vendor" / "mathjax"
STAMP = DEST / "VERSION"


def integrity(path: Path) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(path.read_bytes()).digest()).decode()


def main() -> int:
    if STAMP.exists() and STAMP.read_text().strip() == f"{VERSION} {INTEGRITY}" \
            and (DEST / "tex-mml-chtml.js").exists():
        return 0
    npm = shutil.which("npm")
    if npm is None:
        sys.exit("fetch_mathjax: npm is not on PATH. Install Node.js (e.g. `apt-get install npm`) and re-run; "
                 "the book needs a local MathJax to render maths offline.")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([npm, "pack", f"mathjax@{VERSION}", "--pack-destination", tmp, "--silent"],
                       check=True, stdout=subprocess.DEVNULL)
        tgz = Path(tmp) / f"mathjax-{VERSION}.tgz"
        got = integrity(tgz)
        if got != INTEGRITY:
            sys.exit(f"fetch_mathjax: mathjax-{VERSION}.tgz has integrity {got}, expected {INTEGRITY}; refusing it")
        if DEST.exists():
            shutil.rmtree(DEST)
        DEST.mkdir(parents=True)
        with tarfile.open(tgz) as tar:
            for m in tar.getmembers():
                name = m.name.removeprefix("package/")
                if not m.isfile() or not name.startswith(KEEP):
                    continue
                out = DEST / name.removeprefix("es5/")
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(tar.extractfile(m).read())
    STAMP.write_text(f"{VERSION} {INTEGRITY}\n")
    print(f"fetch_mathjax: MathJax {VERSION} in {DEST.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
