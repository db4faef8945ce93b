"""Re-execute every chapter from its MyST source and refresh the paired, committed .ipynb.

    python scripts/execute_chapters.py            # all chapters
    python scripts/execute_chapters.py ch01       # chapters whose file name contains "ch01"

The .md file is the source: it is read with jupytext, executed in a fresh kernel with nbclient
(working directory = the chapter's folder), and written to the .ipynb beside it with outputs.
Per-chapter wall-clock times go to book/chapter_times.json.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import jupytext
from nbclient import NotebookClient

from chapter_times_table import write as write_times_table

ROOT = Path(__file__).resolve().parents[1]


def chapters(pattern: str = "") -> list[Path]:
    """The paired chapter sources: MyST files under book/chapters with a jupytext header."""
    return [p for p in sorted((ROOT / "book" / "chapters").glob("*.md"))
            if pattern in p.name and "jupytext" in jupytext.read(p).metadata]


def execute(md: Path) -> float:
    nb = jupytext.read(md)
    client = NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(md.parent)}})
    start = time.perf_counter()
    client.execute()
    elapsed = time.perf_counter() - start
    jupytext.write(nb, md.with_suffix(".ipynb"))
    return elapsed


def main(argv: list[str]) -> None:
    pattern = argv[1] if len(argv) > 1 else ""
    times_file = ROOT / "book" / "chapter_times.json"
    times = json.loads(times_file.read_text()) if times_file.exists() else {}
    for md in chapters(pattern):
        print(f"executing {md.relative_to(ROOT)} ...", flush=True)
        seconds = execute(md)
        times[md.stem] = {"seconds": round(seconds, 1), "machine": f"{platform.machine()}, {platform.system()}"}
        print(f"  done in {seconds:.1f} s", flush=True)
    times_file.write_text(json.dumps(times, indent=2, sort_keys=True) + "\n")
    print(f"wrote {write_times_table().relative_to(ROOT)}")  # the performance appendix shows it


if __name__ == "__main__":
    main(sys.argv)
