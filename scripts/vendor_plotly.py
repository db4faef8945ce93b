"""Copy plotly.js from the installed plotly package into _vendor/plotly, so the book serves it itself.

    python scripts/vendor_plotly.py        # `make book` runs it; a no-op once the copy is current

The explorable figures (:mod:`pclib.explore`) load ``plotly/plotly.min.js`` with a path relative to
their page. _config.yml copies _vendor/ to the HTML root (``html_extra_path``), so every page loads
the same single file and nothing from a CDN. The file ships in the plotly wheel (pinned in
requirements.txt); it is not committed.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEST = ROOT / "_vendor" / "plotly" / "plotly.min.js"


def main() -> int:
    import plotly

    src = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not src.exists():
        sys.exit(f"vendor_plotly: {src} is missing; reinstall plotly (pip install -r requirements.txt)")
    if DEST.exists() and DEST.read_bytes() == src.read_bytes():
        return 0
    DEST.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, DEST)
    (DEST.parent / "VERSION").write_text(f"plotly.py {plotly.__version__}\n")
    print(f"vendor_plotly: plotly.js from plotly {plotly.__version__} in {DEST.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
