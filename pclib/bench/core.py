"""The benchmark's shared parts: configurations, the arithmetic floor, timing, the item registry,
and running and writing the report (see :mod:`pclib.bench`)."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import numpy as np


# ----------------------------------------------------------------------------- configurations
@dataclasses.dataclass(frozen=True)
class Config:
    """One training-step benchmark: a tanh MLP with these widths, a batch size, ``steps`` = $T$,
    and the largest allowed (measured ratio) / (floor ratio), where a target is set."""

    name: str
    widths: tuple[int, ...]
    batch: int
    steps: int
    target: float | None = None


CONFIGS = {
    "A": Config("A", (784, 128, 128, 128, 10), 64, 20, target=1.5),
    "B": Config("B", (784, 512, 512, 512, 512, 10), 256, 20, target=1.25),
    "C": Config("C", (784, 128, 128, 128, 10), 64, 5),
}
QUICK_CONFIGS = {  # same shapes of problem, tiny sizes: for the smoke test
    "A": Config("A", (32, 16, 16, 16, 4), 8, 20, target=1.5),
    "B": Config("B", (32, 24, 24, 24, 24, 4), 16, 20, target=1.25),
    "C": Config("C", (32, 16, 16, 16, 4), 8, 5),
}


# ----------------------------------------------------------------------------- the floor
def layer_costs(widths: Sequence[int]) -> list[int]:
    r"""Multiply-adds per sample of each layer's matrix product, $c_l = d_{l-1} d_l$."""
    return [int(a) * int(b) for a, b in zip(widths[:-1], widths[1:])]


def bp_step_cost(widths: Sequence[int]) -> int:
    r"""Multiply-adds per sample of a backprop step: $2\sum_l c_l + \sum_{l\ge2} c_l$."""
    c = layer_costs(widths)
    return 2 * sum(c) + sum(c[1:])


def pc_step_cost(widths: Sequence[int], steps: int) -> int:
    r"""Multiply-adds per sample of a PC step with ``steps`` $= T$ inference steps:
    $2\sum_l c_l + 2T\sum_{l\ge2} c_l$."""
    c = layer_costs(widths)
    return 2 * sum(c) + 2 * int(steps) * sum(c[1:])


def floor_ratio(widths: Sequence[int], steps: int) -> float:
    """The quotient of a PC step's and a BP step's matrix-product work (multiply-add counts): the
    time ratio when both are compute-bound, not a lower bound on it (fixed costs per call differ)."""
    if len(widths) < 2:
        raise ValueError(f"widths must list at least an input and an output width; got {list(widths)}")
    return pc_step_cost(widths, steps) / bp_step_cost(widths)


# ----------------------------------------------------------------------------- timing
def interleaved_times(fns: dict[str, Callable[[], Any]], *, repeats: int, warmup: int = 2) -> dict[str, np.ndarray]:
    """Seconds per call of each zero-argument function, calling them in turn (reversing the order
    every round) so that a change in machine load hits all of them alike.

    Each call is waited for with ``jax.block_until_ready``; the first ``warmup`` rounds (which
    include compilation) are not kept.
    """
    names = list(fns)
    times: dict[str, list[float]] = {k: [] for k in names}
    for r in range(warmup + repeats):
        for k in names if r % 2 == 0 else names[::-1]:
            t0 = time.perf_counter()
            jax.block_until_ready(fns[k]())
            if r >= warmup:
                times[k].append(time.perf_counter() - t0)
    return {k: np.asarray(v) for k, v in times.items()}


def summary_ms(seconds: np.ndarray) -> dict[str, float]:
    """Median, min and max in milliseconds."""
    ms = 1e3 * np.asarray(seconds)
    return {"median": float(np.median(ms)), "min": float(ms.min()), "max": float(ms.max())}


def repeats_for(seconds_per_round: float, *, budget: float, low: int, high: int) -> int:
    """How many rounds fit in ``budget`` seconds, clipped to ``[low, high]``."""
    return int(min(high, max(low, budget / max(seconds_per_round, 1e-9))))


# ----------------------------------------------------------------------------- the registry
@dataclasses.dataclass
class Options:
    """What every item is told: ``quick`` (tiny sizes, few repeats), the training ``configs`` to
    run, and a time ``budget`` in seconds per measurement."""

    quick: bool = False
    configs: tuple[str, ...] = ("A", "B", "C")
    budget: float = 10.0
    lanczos_width: int | None = None


@dataclasses.dataclass
class Section:
    """An item's result: a title, rows of numbers, which row keys to show as table columns
    (key, header, format), and a note printed under the table."""

    title: str
    rows: list[dict]
    columns: list[tuple[str, str, str]]
    note: str = ""


ITEMS: dict[str, Callable[[Options], Section]] = {}


def register(name: str) -> Callable:
    """Decorator: add a benchmark item ``fn(opts: Options) -> Section`` under ``name``."""

    def deco(fn: Callable[[Options], Section]) -> Callable[[Options], Section]:
        ITEMS[name] = fn
        return fn

    return deco


# ----------------------------------------------------------------------------- running and writing
def device_description() -> str:
    """The device JAX runs on, in words, e.g. ``"cpu: AMD EPYC, 2 cores"`` or a GPU's name."""
    dev = jax.devices()[0]
    if dev.platform != "cpu":
        return f"{dev.platform}: {dev.device_kind}"
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu: {model}, {os.cpu_count()} cores"


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (``uptime``), or ``None`` where unavailable."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def run(items: Sequence[str] | None = None, opts: Options | None = None) -> dict:
    """Run the named items (default: all registered) and return the JSON-ready report."""
    opts = opts or Options()
    items = list(ITEMS) if items is None else list(items)
    unknown = [i for i in items if i not in ITEMS]
    if unknown:
        raise ValueError(f"unknown benchmark item(s) {unknown}: choose from {', '.join(ITEMS)}")
    report: dict[str, Any] = {
        "device": device_description(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "jax": jax.__version__,
        "quick": opts.quick,
        "load_before": load_average(),
        "sections": {},
    }
    for name in items:
        before = load_average()
        section = dataclasses.asdict(ITEMS[name](opts))
        section["run"] = {"date": report["date"], "load_before": before, "load_after": load_average()}
        report["sections"][name] = section
    report["load_after"] = load_average()
    return report


def merge(old: dict, new: dict) -> dict:
    """``old`` with ``new``'s sections added or replaced (``--update``): each section keeps its own
    date and load (``section["run"]``), and the device must be the same."""
    if old.get("device") != new["device"]:
        raise ValueError(
            f"cannot update a report measured on {old.get('device')!r} with one from {new['device']!r}: "
            f"write it to another --out folder, or re-run every item"
        )
    if old.get("quick") != new["quick"]:
        raise ValueError("cannot mix a --quick run with a full one in one report; re-run without --update")
    sections = dict(old["sections"])
    for name, sec in old["sections"].items():
        sections[name] = {**sec, "run": sec.get("run", {k: old.get(k) for k in ("date", "load_before", "load_after")})}
    sections.update(new["sections"])
    return {**new, "sections": sections}


def _cell(value: Any, fmt: str) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return fmt.format(value)


def to_markdown(report: dict) -> str:
    """The report as markdown: a header line (device, date, load) and one table per section."""
    lines = [
        f"Device: {report['device']}. Date: {report['date']}. JAX {report['jax']}. "
        f"Load average (1, 5, 15 min) before: {report['load_before']}, after: {report['load_after']}."
        + (" Quick run (tiny sizes)." if report.get("quick") else ""),
        "",
    ]
    for sec in report["sections"].values():
        cols = sec["columns"]
        lines += [f"**{sec['title']}**", ""]
        run_info = sec.get("run")
        if run_info and run_info.get("date") != report["date"]:
            lines += [f"Measured {run_info['date']}; load average before: {run_info['load_before']}, "
                      f"after: {run_info['load_after']}.", ""]
        lines.append("| " + " | ".join(h for _, h, _ in cols) + " |")
        lines.append("|" + "|".join("---" for _ in cols) + "|")
        for row in sec["rows"]:
            lines.append("| " + " | ".join(_cell(row.get(k), f) for k, _, f in cols) + " |")
        if sec.get("note"):
            lines += ["", sec["note"]]
        lines.append("")
    return "\n".join(lines)


def write(report: dict, out: Path | str) -> tuple[Path, Path]:
    """Write ``bench.json`` and ``bench.md`` into the folder ``out``; return their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    js, md = out / "bench.json", out / "bench.md"
    js.write_text(json.dumps(report, indent=2) + "\n")
    md.write_text(to_markdown(report))
    return js, md


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m pclib.bench", description=sys.modules[__package__].__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="bench_out", help="folder for bench.json and bench.md (default: bench_out)")
    parser.add_argument("--configs", default="A,B,C", help="training-step configs, comma-separated (default: A,B,C)")
    parser.add_argument("--items", default=",".join(ITEMS), help=f"items to run (default: {','.join(ITEMS)})")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few repeats (smoke test)")
    parser.add_argument("--budget", type=float, default=10.0, help="seconds of timing per measurement (default: 10)")
    parser.add_argument("--update", action="store_true",
                        help="keep the other items of the report already in --out and replace only these")
    parser.add_argument("--lanczos-width", type=int, default=None,
                        help="hidden width of the curvature item (default: 500)")
    args = parser.parse_args(argv)
    opts = Options(quick=args.quick, configs=tuple(c.strip() for c in args.configs.split(",") if c.strip()),
                   budget=args.budget, lanczos_width=args.lanczos_width)
    print(f"pclib.bench on {device_description()}", flush=True)
    report = run([i.strip() for i in args.items.split(",") if i.strip()], opts)
    existing = Path(args.out) / "bench.json"
    if args.update and existing.exists():
        report = merge(json.loads(existing.read_text()), report)
    js, md = write(report, args.out)
    print(to_markdown(report))
    print(f"wrote {js} and {md}")
    return report


if __name__ == "__main__":
    main()
