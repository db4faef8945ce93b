r"""Chapter 6's depth experiment: μPC (Innocenti, Achour & Buckley 2025) against the standard parameterisation.

Deep networks trained with Adam on MNIST digits, over several initialisations, each method at its own best
learning rate of a grid:

- ``mupc_pc``: PC on the μPC residual network (``param="mupc"``, :func:`pclib.init_mupc`);
- ``mupc_bp``: backprop on the same μPC network (the μP-style BP baseline);
- ``sp_pc``: PC on a standard tanh MLP of the same depth and width (:func:`pclib.init_mlp`, no skips);
- ``sp_bp``: backprop on that MLP.

PC runs $T = L$ Euler inference steps of size ``dt`` per update from the feedforward pass (the inference budget of
jpc's μPC example, which runs as many steps as the net has layers); this is truncated inference, and every
update's residual $\max_{i,l,k}|\partial F_i/\partial z_{l,k}|$ at the end of inference is recorded beside the one
at its start (the feedforward pass). A learning-rate sweep of μPC-PC over several (width, depth) pairs shows
whether the best rate of a narrow shallow net stays the best on wider and deeper ones.

jpc's activity step is on the batch-mean energy, so its ``activity_lr`` is ``dt`` times the batch size here
(our ``dt`` is per sample, :func:`pclib.infer`).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import data
from ..energy import _mse_loss
from ..inference import infer
from ..learning import _bp_grads, _pc_grads, run_score
from ..model import forward, init_mlp, init_mupc
from . import check_size, register

METHODS = ("mupc_pc", "mupc_bp", "sp_pc", "sp_bp")
ACT = "tanh"
DT = 0.2  # PC's Euler step (per sample), stable for every net here (energies checked at every update)
MUPC_LRS = (0.01, 0.03, 0.1, 0.3, 1.0)  # Adam rates; μPC's weights are N(0, 1)
SP_LRS = (0.0001, 0.0003, 0.001, 0.003)  # Adam rates for the standard MLP (weights ~ 1/sqrt(fan-in))
SETTINGS = {  # dataset, train digits (None: all), test digits (None: all), width N, depth L, epochs, the (width, depth)
    # pairs of the learning-rate sweep besides (N, L), seeds
    "smoke": dict(dataset="mnist5k", samples=128, test=256, width=8, depth=6, epochs=1, transfer=((8, 4),),
                  seeds=(0, 1, 2)),
    "chapter": dict(dataset="mnist5k", samples=512, test=1000, width=64, depth=32, epochs=2,
                    transfer=((32, 8), (64, 8), (32, 32)), seeds=(0, 1, 2)),
    "medium": dict(dataset="mnist5k", samples=None, test=None, width=64, depth=128, epochs=1,
                   transfer=((32, 8), (128, 8), (32, 32), (128, 32), (32, 128)), seeds=(0, 1, 2)),
    "paper": dict(dataset="mnist", samples=None, test=None, width=128, depth=128, epochs=1,
                  transfer=((32, 8), (128, 8), (512, 8), (32, 32), (128, 32), (512, 32), (32, 128), (512, 128)),
                  seeds=(0, 1, 2)),
}
BATCH = 64


def _digits(name: str, samples: int | None, test: int | None):
    """Training and test digits, standardised with MNIST's pixel mean and std (0.1307, 0.3081) as in jpc."""
    ds = data.get(name, seed=0)
    n, m = ds.x_train.shape[0] if samples is None else samples, ds.x_test.shape[0] if test is None else test
    norm = lambda a: ((np.asarray(a, np.float32) - 0.1307) / 0.3081).astype(np.float32)  # noqa: E731
    return (norm(ds.x_train[:n]), np.asarray(ds.y_train[:n], np.float32), norm(ds.x_test[:m]),
            np.asarray(ds.y_test[:m], np.float32))


@lru_cache(maxsize=16)
def _runner(method: str, param: str, steps: int, dt: float):
    """One compiled function training every (seed, rate) pair with Adam, vmapped; per update it records the batch
    loss, PC's residual at the start and the end of inference, whether inference's energy grew, and the norm of
    each layer's gradient."""

    def run_one(params0, lr, x, y, idx):
        opt = optax.adam(lr)

        def body(carry, rows):
            p, state = carry
            xb, yb = x[rows], y[rows]
            loss = _mse_loss(p, xb, yb, act=ACT, out_act="linear", param=param)
            if method == "bp":
                g = _bp_grads(p, xb, yb, act=ACT, out_act="linear", param=param)
                start = end = jnp.zeros((), loss.dtype)
                grew = jnp.array(False)
            else:
                opts = dict(act=ACT, param=param, check=False)
                start = infer(p, xb, yb, steps=0, **opts).residual
                res = infer(p, xb, yb, steps=steps, dt=dt, **opts)
                e = res.energies
                grew = ~jnp.all(jnp.isfinite(e)) | (jnp.max(e) > 2.0 * e[0] + 1e-8)
                end = res.residual
                g = _pc_grads(p, res.activities, None, act=ACT, out_act="linear", param=param)
            norms = jnp.stack([jnp.sqrt(sum(jnp.sum(v**2) for v in jax.tree_util.tree_leaves(layer))) for layer in g])
            updates, state = opt.update(g, state, p)
            return (optax.apply_updates(p, updates), state), (loss, start, end, grew, norms)

        (p, _), rows = jax.lax.scan(body, (params0, opt.init(params0)), idx)
        return p, rows

    return jax.jit(jax.vmap(run_one, in_axes=(0, 0, None, None, None)))


@lru_cache(maxsize=8)
def _evaluator(param: str):
    def one(p, x, y):
        out = forward(p, x, act=ACT, param=param)[-1]
        return 0.5 * jnp.mean(jnp.sum((y - out) ** 2, axis=1)), jnp.mean(jnp.argmax(out, 1) == jnp.argmax(y, 1))

    return jax.jit(jax.vmap(one, in_axes=(0, None, None)))


def _train(method: str, widths: list, x, y, xt, yt, idx, lrs, seeds, steps: int) -> dict:
    """Train ``method`` at every rate of ``lrs`` from each seed's initialisation; pick the rate with the lowest mean
    score over seeds (:func:`pclib.learning.run_score`, the area under the loss curve)."""
    param = "mupc" if method.startswith("mupc") else "standard"
    how = method.split("_")[1]
    init = (lambda k: init_mupc(k, widths)) if param == "mupc" else (lambda k: init_mlp(k, widths, act=ACT,
                                                                                       dtype=jnp.float32))
    starts = [init(jax.random.key(s)) for s in seeds]
    K, S = len(lrs), len(seeds)
    stacked = jax.tree_util.tree_map(lambda *a: jnp.stack([v for v in a for _ in range(K)]), *starts)
    lr_all = jnp.asarray(np.tile(np.asarray(lrs, np.float32), S))
    p, (loss, start, end, grew, norms) = _runner(how, param, steps if how == "pc" else 0, DT if how == "pc" else 0.0)(
        stacked, lr_all, jnp.asarray(x), jnp.asarray(y), jnp.asarray(idx))
    finite = jnp.stack([jnp.all(jnp.isfinite(a.reshape(a.shape[0], -1)), axis=1) for a in jax.tree_util.tree_leaves(p)])
    bad = np.asarray(jnp.any(grew, axis=1) | ~jnp.all(finite, axis=0)).reshape(S, K)
    loss = np.asarray(loss, np.float64).reshape(S, K, -1)
    scores = np.array([[run_score(loss[s, k], diverged=bool(bad[s, k])) for k in range(K)] for s in range(S)])
    mean = scores.mean(axis=0)
    best = int(np.argmin(mean)) if np.isfinite(mean).any() else -1
    test_loss, test_acc = (np.asarray(v, np.float64).reshape(S, K) for v in _evaluator(param)(p, jnp.asarray(xt),
                                                                                            jnp.asarray(yt)))
    out = {"lrs": np.asarray(lrs), "scores": scores, "diverged": bad, "best_lr": float(lrs[best]) if best >= 0 else None,
           "final_loss": loss[:, :, -max(1, loss.shape[2] // 10):].mean(axis=2), "test_accuracy_grid": test_acc}
    if best >= 0:
        out.update(losses=loss[:, best], test_loss=test_loss[:, best], test_accuracy=test_acc[:, best])
        if how == "pc":
            out.update(residual_start=np.asarray(start, np.float64).reshape(S, K, -1)[:, best],
                       residual_end=np.asarray(end, np.float64).reshape(S, K, -1)[:, best])
    # each layer's gradient norm at the first update (the initialisation and the first minibatch, equal for every rate)
    first = np.asarray(norms, np.float64).reshape(S, K, -1, len(widths) - 1)[:, 0, 0]
    out["first_grad_layers"] = first
    if how == "pc":  # the layers PC's truncated inference gave a gradient above round-off
        out["layers_reached"] = (first > 1e-6 * first.max(axis=1, keepdims=True)).sum(axis=1)
    return out


def _gradient_ratios(pc: dict, bp: dict) -> None:
    """|g_BP| / |g_PC| at initialisation on the first minibatch, per seed, and PC's per-layer profile (largest 1)."""
    g_pc, g_bp = np.asarray(pc["first_grad_layers"]), np.asarray(bp["first_grad_layers"])
    pc["grad_ratio"] = np.linalg.norm(g_bp, axis=1) / np.linalg.norm(g_pc, axis=1)
    pc["pc_layer_norms"] = g_pc / g_pc.max(axis=1, keepdims=True)


def draw(result: dict, fig: Any) -> None:
    """Left: training loss per method (mean and range over seeds, each at its best rate). Right: μPC-PC's final
    training loss against the learning rate for each (width, depth)."""
    from ..plotting import COLORS

    ax1, ax2 = fig.subplots(1, 2)
    styles = {"mupc_pc": (COLORS["pc"], "-"), "mupc_bp": (COLORS["bp"], "-"), "sp_pc": (COLORS["pc"], ":"),
              "sp_bp": (COLORS["bp"], ":")}
    for m in METHODS:
        r = result["runs"][m]
        if r.get("losses") is None:
            continue
        c, ls = styles[m]
        curves = np.asarray(r["losses"])
        ax1.plot(curves.mean(axis=0), color=c, ls=ls, label=f"{m.replace('_', ' ').upper()}, rate {r['best_lr']:g}")
        ax1.fill_between(np.arange(curves.shape[1]), curves.min(axis=0), curves.max(axis=0), color=c, alpha=0.2)
    ax1.set(xlabel="update", ylabel="training loss (batch)", title=f"{result['depth']} layers, width {result['width']}")
    ax1.legend(fontsize=7)
    for name, r in result["transfer"].items():
        loss = np.where(np.asarray(r["diverged"]), np.nan, np.asarray(r["final_loss"], np.float64))
        ax2.plot(r["lrs"], loss.mean(axis=0), marker="o", label=name)
    ax2.set(xscale="log", xlabel="Adam learning rate", ylabel="final training loss (last 10%)",
            title="μPC-PC: learning-rate transfer")
    ax2.legend(fontsize=7)


def summary(result: dict) -> str:
    """Lines a chapter can print: per method the rate, test accuracy and final training loss (mean [min, max] over
    seeds, two significant digits), PC's residual and reach; then the best rate of each (width, depth)."""
    g = lambda v: f"{float(v):.2g}"  # noqa: E731
    band = lambda a: f"{g(np.mean(a))} [{g(np.min(a))}, {g(np.max(a))}]"  # noqa: E731
    lines = [f"{result['depth']} layers of width {result['width']}, {result['samples']} digits, {result['updates']} Adam "
             f"updates of {result['batch_size']}, {len(result['seeds'])} seeds; PC: T = {result['steps']} Euler steps of "
             f"dt = {g(result['dt'])} (truncated)"]
    for m in METHODS:
        r = result["runs"][m]
        if r.get("losses") is None:
            lines.append(f"  {m}: diverged at every rate")
            continue
        q = max(1, np.shape(r["losses"])[1] // 10)
        text = (f"  {m}: rate {g(r['best_lr'])}; test accuracy {band(r['test_accuracy'])}; training loss last 10% "
                f"{band(np.mean(np.asarray(r['losses'])[:, -q:], axis=1))}")
        if "residual_end" in r:
            ratio = np.asarray(r["residual_end"]) / np.asarray(r["residual_start"])
            text += (f"; residual end/start median {g(np.median(ratio))}, max {g(np.max(ratio))}; |g_BP|/|g_PC| at init "
                     f"{band(r['grad_ratio'])}; layers with PC gradient > 1e-6 of the largest: "
                     f"{'/'.join(str(int(v)) for v in r['layers_reached'])} of {result['depth']}")
        lines.append(text)
    base = next(iter(result["transfer"]))
    lines.append(f"  muPC-PC best rate per (width, depth), and the final training loss at {base}'s best rate "
                 f"vs the lowest over the grid: " + "; ".join(
                     f"{k}: {g(v['best_lr']) if v['best_lr'] is not None else 'none'} "
                     f"({g(v['loss_at_base_rate'])} vs {g(v['best_final_loss'])})" for k, v in result["transfer"].items()))
    return "\n".join(lines)


@register("ch06_mupc_depth", chapter="ch06", title="μPC vs the standard parameterisation in deep nets, PC and BP",
          draw=draw, summarize=lambda result: f"```text\n{summary(result)}\n```\n")
def mupc_depth(size: str = "chapter") -> dict:
    r"""The four methods of the module docstring at one depth and width, over the seeds, each at its best Adam
    rate; then μPC-PC's rate sweep at each (width, depth) of the size's ``transfer`` list (and the main one)."""
    cfg = SETTINGS[check_size(size)]
    x, y, xt, yt = _digits(cfg["dataset"], cfg["samples"], cfg["test"])
    N, L, seeds = cfg["width"], cfg["depth"], cfg["seeds"]
    rng = np.random.default_rng(0)
    idx = np.stack([rng.permutation(x.shape[0])[: (x.shape[0] // BATCH) * BATCH].reshape(-1, BATCH)
                    for _ in range(cfg["epochs"])]).reshape(-1, BATCH)
    widths = [x.shape[1]] + [N] * (L - 1) + [y.shape[1]]
    runs = {m: _train(m, widths, x, y, xt, yt, idx, MUPC_LRS if m.startswith("mupc") else SP_LRS, seeds, L)
            for m in METHODS}
    for param in ("mupc", "sp"):
        _gradient_ratios(runs[f"{param}_pc"], runs[f"{param}_bp"])
    transfer, keep = {}, ("lrs", "final_loss", "scores", "best_lr", "diverged", "layers_reached")
    for n, l in cfg["transfer"]:
        w = [x.shape[1]] + [n] * (l - 1) + [y.shape[1]]
        r = _train("mupc_pc", w, x, y, xt, yt, idx, MUPC_LRS, seeds, l)
        transfer[n, l] = {k: r[k] for k in keep}
    transfer[N, L] = {k: runs["mupc_pc"][k] for k in keep}
    transfer = {f"N={n}, L={l}": dict(r, width=n, depth=l)
                for (n, l), r in sorted(transfer.items(), key=lambda kv: (kv[0][1], kv[0][0]))}
    # the rate tuned on the narrowest shallowest net, used on every other: its final loss against the best there
    base = next(iter(transfer.values()))
    for r in transfer.values():
        loss = np.where(np.asarray(r["diverged"]), np.inf, np.asarray(r["final_loss"])).mean(axis=0)
        at = list(r["lrs"]).index(base["best_lr"]) if base["best_lr"] is not None else None
        r["loss_at_base_rate"] = float(loss[at]) if at is not None else float("inf")
        r["best_final_loss"] = float(np.min(loss))
    return {"size": size, "width": N, "depth": L, "samples": int(x.shape[0]), "test_samples": int(xt.shape[0]),
            "updates": int(idx.shape[0]), "batch_size": BATCH, "steps": L, "dt": DT, "act": ACT, "seeds": list(seeds),
            "runs": runs, "transfer": transfer}
