"""Benchmark item: one PC training step against backprop and against the floor."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..learning import make_step
from ..model import init_mlp
from .core import (
    CONFIGS, QUICK_CONFIGS, Config, Options, Section, bp_step_cost, floor_ratio, interleaved_times, pc_step_cost, register,
    repeats_for, summary_ms,
)


# ----------------------------------------------------------------------------- item: training step
def random_batches(config: Config, *, count: int, seed: int = 0) -> list[tuple[jax.Array, jax.Array]]:
    """``count`` batches of standard-normal inputs and one-hot targets, float32."""
    d_in, d_out = config.widths[0], config.widths[-1]
    out = []
    for k in jax.random.split(jax.random.key(seed), count):
        kx, ky = jax.random.split(k)
        x = jax.random.normal(kx, (config.batch, d_in), jnp.float32)
        y = jax.nn.one_hot(jax.random.randint(ky, (config.batch,), 0, d_out), d_out, dtype=jnp.float32)
        out.append((x, y))
    return out


def bench_training_step(config: Config, *, budget: float = 10.0, quick: bool = False) -> dict:
    """Time compiled PC and BP training steps (``pclib.make_step``, SGD) on one configuration.

    Both steps get the same parameters and cycle through the same few batches; their outputs
    are discarded, so every call does the same work. Reports per-step times, the ratio of
    median times, the median of the per-round ratios, the floor, and how many times the PC
    step was compiled (1 means new data never triggered recompilation).
    """
    params = init_mlp(jax.random.key(0), config.widths, act="tanh", dtype=jnp.float32)
    opt = optax.sgd(0.01)
    state = opt.init(params)
    pc = make_step(opt, method="pc", act="tanh", steps=config.steps, dt=0.1)
    bp = make_step(opt, method="bp", act="tanh")
    data = random_batches(config, count=4)
    calls = {"pc": 0, "bp": 0}

    def run(name: str, step: Callable) -> Callable[[], Any]:
        def call():
            x, y = data[calls[name] % len(data)]
            calls[name] += 1
            return step(params, state, x, y)

        return call

    fns = {"pc": run("pc", pc), "bp": run("bp", bp)}
    probe = interleaved_times(fns, repeats=1, warmup=2)
    per_round = float(probe["pc"][0] + probe["bp"][0])
    reps = 5 if quick else repeats_for(per_round, budget=budget, low=21, high=1000)
    t = interleaved_times(fns, repeats=reps, warmup=0)
    pc_ms, bp_ms = summary_ms(t["pc"]), summary_ms(t["bp"])
    ratio = pc_ms["median"] / bp_ms["median"]
    floor = floor_ratio(config.widths, config.steps)
    flops = lambda macs, ms: 2.0 * macs * config.batch / (ms * 1e-3) / 1e9  # noqa: E731
    return {
        "config": config.name,
        "network": "-".join(map(str, config.widths)),
        "batch": config.batch,
        "T": config.steps,
        "repeats": reps,
        "pc_ms": pc_ms,
        "bp_ms": bp_ms,
        "pc_ms_text": f"{pc_ms['median']:.3g} [{pc_ms['min']:.3g}, {pc_ms['max']:.3g}]",
        "bp_ms_text": f"{bp_ms['median']:.3g} [{bp_ms['min']:.3g}, {bp_ms['max']:.3g}]",
        "ratio": ratio,
        "paired_ratio": float(np.median(t["pc"] / t["bp"])),
        "floor": floor,
        "ratio_over_floor": ratio / floor,
        "target": config.target,
        "target_text": "—" if config.target is None else f"≤ {config.target:g}",
        "meets_target": None if config.target is None else bool(ratio / floor <= config.target),
        "met_text": "—" if config.target is None else ("yes" if ratio / floor <= config.target else "no"),
        "pc_gflops": flops(pc_step_cost(config.widths, config.steps), pc_ms["median"]),
        "bp_gflops": flops(bp_step_cost(config.widths), bp_ms["median"]),
        "pc_compilations": int(pc._cache_size()),
    }


@register("training_step")
def training_step_item(opts: Options) -> Section:
    """PC vs BP training step, configs A, B and C."""
    table = QUICK_CONFIGS if opts.quick else CONFIGS
    unknown = [c for c in opts.configs if c not in table]
    if unknown:
        raise ValueError(f"unknown config(s) {unknown}: choose from {', '.join(table)}")
    rows = []
    for name in opts.configs:
        print(f"  training step, config {name} ...", flush=True)
        rows.append(bench_training_step(table[name], budget=opts.budget, quick=opts.quick))
    return Section(
        title="Training step: PC against backprop (tanh MLP, float32, SGD)",
        rows=rows,
        columns=[
            ("config", "config", "{}"), ("network", "network", "{}"), ("batch", "batch", "{}"), ("T", "T", "{}"),
            ("pc_ms_text", "PC ms: median [min, max]", "{}"), ("bp_ms_text", "BP ms: median [min, max]", "{}"),
            ("ratio", "PC/BP", "{:.2f}"), ("paired_ratio", "PC/BP paired", "{:.2f}"), ("floor", "floor", "{:.1f}"),
            ("ratio_over_floor", "ratio/floor", "{:.2f}"), ("target_text", "target", "{}"),
            ("met_text", "met", "{}"),
            ("pc_gflops", "PC GFLOP/s", "{:.0f}"), ("bp_gflops", "BP GFLOP/s", "{:.0f}"),
        ],
        note=(
            "PC/BP is the ratio of median step times; 'paired' is the median over rounds of the ratio of "
            "the PC and BP steps timed back to back. GFLOP/s counts only the matrix products of the floor. "
            "Each step is a compiled (jitted) call, timed with block_until_ready after compilation."
        ),
    )


