r"""Benchmark item: the cost of calling pclib's entry points against the same maths in plain jitted JAX.

A call of :func:`pclib.infer` followed by :func:`pclib.pc_grads`, or of :func:`pclib.bp_grads`, should cost
no more than one compiled function that does the same arithmetic (the *reference*, written here from
the definitions, without pclib): the ratio of their median times is the overhead of pclib's checks,
dispatch and host round trips. Both are timed after their first call (compilation excluded),
interleaved so that machine load hits both alike.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from ..inference import infer
from ..learning import bp_grads, pc_grads
from .core import CONFIGS, QUICK_CONFIGS, Config, Options, Section, interleaved_times, register, repeats_for, summary_ms
from .training import random_batches

TARGET = 1.5
DT = 0.1


def _layers(params, z0):
    """Hidden tanh, linear output: the activities of the feedforward pass."""
    zs = [z0]
    for l, p in enumerate(params):
        a = zs[-1] @ p["W"].T + p["b"]
        zs.append(jnp.tanh(a) if l < len(params) - 1 else a)
    return zs


def _sum_energy(params, zs):
    r"""$\sum_i F_i$ with unit precisions, tanh hidden layers and a linear output."""
    total = 0.0
    for l, p in enumerate(params):
        a = zs[l] @ p["W"].T + p["b"]
        mu = jnp.tanh(a) if l < len(params) - 1 else a
        total = total + 0.5 * jnp.sum((zs[l + 1] - mu) ** 2)
    return total


@partial(jax.jit, static_argnames=("steps", "outputs"))
def reference_pc_grads(params, x, y, *, steps: int, dt: float = DT, outputs: str = "same"):
    """``steps`` Euler inference steps from the feedforward pass (output clamped, layer 1's prediction
    computed once), then the weight gradient of the mean energy: plain JAX, one compiled call.

    ``outputs="same"`` also returns what :func:`pclib.infer` returns besides the activities, the
    energy at every step and the residual $\\max |\\partial F_i/\\partial z|$ at the end point (one more
    gradient evaluation); ``outputs="bare"`` returns the weight gradient only."""
    zs = _layers(params, x)
    mu1 = jnp.tanh(x @ params[0]["W"].T + params[0]["b"])

    def free_energy(hidden):
        rest = _sum_energy(params[1:], [*hidden, y])
        return 0.5 * jnp.sum((hidden[0] - mu1) ** 2) + rest

    def step(hidden, _):
        if outputs == "bare":
            return [h - dt * gh for h, gh in zip(hidden, jax.grad(free_energy)(hidden))], None
        f, g = jax.value_and_grad(free_energy)(hidden)
        return [h - dt * gh for h, gh in zip(hidden, g)], f

    hidden, fs = jax.lax.scan(step, zs[1:-1], None, length=steps)
    grads = jax.grad(lambda p: _sum_energy(p, [x, *hidden, y]) / x.shape[0])(params)
    if outputs == "bare":
        return grads
    f_T, g_T = jax.value_and_grad(free_energy)(hidden)
    residual = jnp.max(jnp.stack([jnp.max(jnp.abs(g)) for g in g_T]))
    return grads, jnp.concatenate([fs, f_T[None]]) / x.shape[0], residual


@jax.jit
def reference_bp_grads(params, x, y):
    """The gradient of the mean squared error $\\frac1{2N}\\sum_i\\lVert y_i - \\hat y_i\\rVert^2$: plain JAX."""
    return jax.grad(lambda p: 0.5 * jnp.sum((y - _layers(p, x)[-1]) ** 2) / x.shape[0])(params)


@jax.jit
def reference_energy_grads(params, zs):
    """The weight gradient of the mean energy at given activities: plain JAX."""
    return jax.grad(lambda p: _sum_energy(p, zs) / zs[0].shape[0])(params)


def _rel_diff(a: Any, b: Any) -> float:
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    num = sum(float(jnp.sum((u - v) ** 2)) for u, v in zip(la, lb))
    return float(np.sqrt(num / sum(float(jnp.sum(v**2)) for v in lb)))


def bench_overhead(config: Config, *, budget: float = 10.0, quick: bool = False) -> list[dict]:
    """Rows for one configuration: ``infer`` + ``pc_grads`` at the config's $T$, ``bp_grads``, and
    ``pc_grads`` alone at the feedforward activities (output clamped), each against its plain-JAX reference, on float32 data cycling through a few batches."""
    from ..model import init_mlp

    params = init_mlp(jax.random.key(0), config.widths, act="tanh", dtype=jnp.float32)
    data = random_batches(config, count=4)
    T = config.steps
    at = {id(x): _layers(params, x)[:-1] + [y] for x, y in data}  # activities per batch, for pc_grads alone
    def with_outputs(check: bool) -> Callable:
        def call(x, y):
            r = infer(params, x, y, steps=T, dt=DT, check=check)
            return pc_grads(params, r.activities), r.energies, r.residual

        return call

    bare = partial(reference_pc_grads, steps=T, outputs="bare")
    same = partial(reference_pc_grads, steps=T, outputs="same")
    # (pclib call, plain-JAX reference of the same outputs, plain-JAX reference of the bare T steps or None)
    pairs: dict[str, tuple[Callable, Callable, Callable | None]] = {
        f"infer + pc_grads (T = {T})": (with_outputs(True), lambda x, y: same(params, x, y), lambda x, y: bare(params, x, y)),
        f"infer(check=False) + pc_grads (T = {T})": (
            with_outputs(False), lambda x, y: same(params, x, y), lambda x, y: bare(params, x, y)),
        "bp_grads": (lambda x, y: bp_grads(params, x, y), lambda x, y: reference_bp_grads(params, x, y), None),
        "pc_grads (at given activities)": (
            lambda x, y: pc_grads(params, at[id(x)]),
            lambda x, y: reference_energy_grads(params, at[id(x)]), None,
        ),
    }
    rows = []
    for name, (lib, ref, bare_ref) in pairs.items():
        calls = {"pclib": 0, "plain": 0}

        def cycle(key: str, fn: Callable) -> Callable[[], Any]:
            def call():
                x, y = data[calls[key] % len(data)]
                calls[key] += 1
                return fn(x, y)

            return call

        fns = {"pclib": cycle("pclib", lib), "plain": cycle("plain", ref)}
        if bare_ref is not None:
            calls["bare"] = 0
            fns["bare"] = cycle("bare", bare_ref)
        probe = interleaved_times(fns, repeats=1, warmup=2)
        reps = 5 if quick else repeats_for(float(probe["pclib"][0] + probe["plain"][0]), budget=budget, low=21, high=2000)
        t = interleaved_times(fns, repeats=reps, warmup=0)
        lib_ms, ref_ms = summary_ms(t["pclib"]), summary_ms(t["plain"])
        ratio = lib_ms["median"] / ref_ms["median"]
        bare_ratio = lib_ms["median"] / summary_ms(t["bare"])["median"] if bare_ref is not None else float("nan")
        rows.append({
            "config": config.name, "network": "-".join(map(str, config.widths)), "batch": config.batch,
            "call": name, "repeats": reps, "pclib_ms": lib_ms, "plain_ms": ref_ms,
            "pclib_text": f"{lib_ms['median']:.3g} [{lib_ms['min']:.3g}, {lib_ms['max']:.3g}]",
            "plain_text": f"{ref_ms['median']:.3g} [{ref_ms['min']:.3g}, {ref_ms['max']:.3g}]",
            "ratio": ratio, "paired_ratio": float(np.median(t["pclib"] / t["plain"])),
            "bare_ratio": bare_ratio, "bare_text": "-" if bare_ref is None else f"{bare_ratio:.2f}",
            "target": TARGET, "met_text": "yes" if ratio <= TARGET else "no",
            "rel_diff": _rel_diff(lib(*data[0]), ref(*data[0])),
        })
    return rows


@register("call_overhead")
def call_overhead_item(opts: Options) -> Section:
    """pclib's infer + pc_grads and bp_grads against plain jitted JAX, configs A and C."""
    table = QUICK_CONFIGS if opts.quick else CONFIGS
    names = [c for c in opts.configs if c in ("A", "C")]  # the others have other widths; none runs here
    rows = []
    for name in names:
        print(f"  call overhead, config {name} ...", flush=True)
        rows += bench_overhead(table[name], budget=opts.budget, quick=opts.quick)
    return Section(
        title="Call overhead: pclib's entry points against the same maths in plain jitted JAX (float32)",
        rows=rows,
        columns=[
            ("config", "config", "{}"), ("network", "network", "{}"), ("batch", "batch", "{}"), ("call", "call", "{}"),
            ("pclib_text", "pclib ms: median [min, max]", "{}"), ("plain_text", "plain JAX ms: median [min, max]", "{}"),
            ("ratio", "pclib/plain", "{:.2f}"), ("paired_ratio", "paired", "{:.2f}"),
            ("bare_text", "pclib/bare steps", "{}"),
            ("target", "target ≤", "{:g}"), ("met_text", "met", "{}"), ("rel_diff", "rel. difference", "{:.1e}"),
        ],
        note=(
            "Each pclib call is what a user writes: infer (with its default divergence check, which waits "
            "for the result, or with check=False, which does not) and then pc_grads at its activities, or "
            "bp_grads. The reference is one jitted function written from the definitions that returns the "
            "same things: for inference the weight gradient, the energy at every step and the residual "
            "max |dF_i/dz| at the end point, which costs one gradient evaluation more than the T steps. "
            "'pclib/bare steps' compares with a reference that runs the T steps and the weight gradient "
            "only: at small T it includes that extra evaluation, (T + 1)/T of the inference arithmetic; inside "
            "a user's jit, outputs that are not used are compiled away. 'paired' is the median over rounds "
            "of the two times back to back; 'rel. difference' compares their results (float32)."
        ),
    )
