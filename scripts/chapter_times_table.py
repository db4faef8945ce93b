"""Write book/bench/chapter_times.md: each chapter's execution time from book/chapter_times.json.

    python scripts/chapter_times_table.py

scripts/execute_chapters.py records the times and calls this script's `write()` after executing
chapters; the performance appendix (book/performance.md) includes the table, and
tests/test_perf.py checks that it is current.
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIMES = ROOT / "book" / "chapter_times.json"
TABLE = ROOT / "book" / "bench" / "chapter_times.md"
BUDGET_S = 90.0  # each chapter's default run, on 2 CPU cores


def table() -> str:
    """Markdown table: one row per chapter under book/chapters, in order, with its recorded time."""
    times = json.loads(TIMES.read_text()) if TIMES.exists() else {}
    chapters = sorted(p.stem for p in (ROOT / "book" / "chapters").glob("ch*.md"))
    lines = [
        "| chapter | seconds | within the 90 s budget | machine |",
        "|---|---|---|---|",
    ]
    total = 0.0
    for name in chapters:
        t = times.get(name)
        if t is None:
            lines.append(f"| {name} | not yet executed | — | — |")
            continue
        total += t["seconds"]
        ok = "yes" if t["seconds"] <= BUDGET_S else "no"
        lines.append(f"| {name} | {t['seconds']:.1f} | {ok} | {t.get('machine', '—')} |")
    lines.append(f"| **all chapters** | {total:.1f} | | |")
    return "\n".join(lines) + "\n"


def write() -> Path:
    TABLE.parent.mkdir(parents=True, exist_ok=True)
    TABLE.write_text(table())
    return TABLE


if __name__ == "__main__":
    print(f"wrote {write().relative_to(ROOT)}")
