"""``python -m pclib.scale``: run the chapters' larger experiments and write their results.

    python -m pclib.scale --size smoke                  # every experiment, tiny sizes (seconds)
    python -m pclib.scale --size medium --only ch04     # one chapter's experiments
    python -m pclib.scale --size paper --only ch04_deep_saddle --force

Results go to ``<out>/<size>/``: ``<name>.json`` (the result, how long it took and the machine's load
then), ``<name>.png`` and ``<name>.svg`` (its figure), ``<name>.md`` (its numbers, for the book's "Results at
scale" page) and ``summary.md`` (device, date and wall time of every experiment there).
An experiment whose JSON already exists is skipped (a stopped run resumes), unless ``--force``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

from tqdm.auto import tqdm

from . import REGISTRY, SIZES, from_json, summarize_comparisons, to_json


def device() -> str:
    from ..bench.core import device_description

    return device_description()


def selected(only: str | None) -> list[str]:
    """Experiment names matching ``--only`` (comma-separated names or chapter ids), all if ``None``."""
    if not only:
        return list(REGISTRY)
    keys = [k.strip() for k in only.split(",") if k.strip()]
    names = [n for n, e in REGISTRY.items() if n in keys or e.chapter in keys]
    unknown = [k for k in keys if k not in REGISTRY and all(e.chapter != k for e in REGISTRY.values())]
    if unknown:
        raise SystemExit(f"unknown experiment or chapter {', '.join(unknown)}; known: {', '.join(REGISTRY)}")
    return names


def _load(record: dict) -> str:
    """The load average when the experiment started, or "not recorded" (records from before it was kept)."""
    load = record.get("load")
    return "not recorded" if load is None or load != load else f"{load:.1f}"


def write_summary(folder: Path) -> Path:
    rows = []
    for path in sorted(folder.glob("*.json")):
        rec = json.loads(path.read_text())
        rows.append(f"| {rec['name']} | {rec['title']} | {rec['device']} | {rec['date']} | {rec['seconds']:.0f} "
                    f"| {_load(rec)} |")
    text = (f"Results at size `{folder.name}` (`python -m pclib.scale --size {folder.name}`).\n\n"
            "| experiment | what | device | date | wall time (s) | load average at start |\n"
            "|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")
    out = folder / "summary.md"
    out.write_text(text)
    return out


def run(name: str, size: str, folder: Path) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    exp = REGISTRY[name]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    start = time.perf_counter()
    result = exp.run(size)
    seconds = time.perf_counter() - start
    fig = plt.figure(figsize=(12, 3.4))
    exp.draw(result, fig)
    fig.tight_layout()
    for ext in ("png", "svg"):
        fig.savefig(folder / f"{name}.{ext}", dpi=110, metadata={"Date": None} if ext == "svg" else None)
    plt.close(fig)
    record = {"name": name, "title": exp.title, "chapter": exp.chapter, "size": size, "device": device(),
              "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "seconds": seconds, "load": load, "result": to_json(result)}
    (folder / f"{name}.json").write_text(json.dumps(record, indent=1))
    write_numbers(record, folder)
    return record


def write_numbers(record: dict, folder: Path) -> Path:
    """``<name>.md``: the experiment's numbers, from its JSON record (so a report that came back from
    another machine can be summarised here with ``--report``)."""
    exp = REGISTRY[record["name"]]
    numbers = (exp.summarize or summarize_comparisons)(from_json(record["result"]))
    out = folder / f"{record['name']}.md"
    out.write_text(f"*Size `{record['size']}`, {record['device']}, {record['date']}, wall time {record['seconds']:.0f} s"
                   f" (load average {_load(record)} when it started).*\n\n{numbers}\n")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pclib.scale", description=__doc__.split("\n")[0])
    ap.add_argument("--size", choices=SIZES, default="smoke")
    ap.add_argument("--only", default=None, help="comma-separated experiment names or chapters (e.g. ch04)")
    ap.add_argument("--out", default="book/scale", help="results folder (default book/scale)")
    ap.add_argument("--force", action="store_true", help="re-run experiments whose results exist")
    ap.add_argument("--report", action="store_true", help="run nothing; rewrite the .md reports from the JSON")
    args = ap.parse_args(argv)
    folder = Path(args.out) / args.size
    folder.mkdir(parents=True, exist_ok=True)
    names = selected(args.only)
    if args.report:
        for name in names:
            if (folder / f"{name}.json").exists():
                print(f"wrote {write_numbers(json.loads((folder / f'{name}.json').read_text()), folder)}")
        print(f"wrote {write_summary(folder)}")
        return 0
    print(f"pclib.scale: {len(names)} experiment(s) at size {args.size} on {device()}", flush=True)
    for name in (bar := tqdm(names, unit="experiment")):
        bar.set_description(name)
        if (folder / f"{name}.json").exists() and not args.force:
            tqdm.write(f"  {name}: done already ({folder / (name + '.json')}); --force re-runs it")
            continue
        rec = run(name, args.size, folder)
        tqdm.write(f"  {name}: {rec['seconds']:.0f} s")
    print(f"wrote {write_summary(folder)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
