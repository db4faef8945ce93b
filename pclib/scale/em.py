r"""Chapter 2's experiments (Millidge et al. 2022): PC against backprop under the
fair-comparison protocol of :func:`pclib.compare.compare` with the cosine between their updates (the
paper's Fig. 4B/C), and full-batch PC with exact E-steps on linear networks (Theorem 3.6 and the
equilibrated energy $\mathcal F^*$ it descends).

Both run in float64 at the ``"smoke"`` and ``"chapter"`` sizes (the chapter's setting, whose checks
compare to $10^{-5}$ and tighter), and the MNIST comparison in float32 at ``"medium"`` and ``"paper"``."""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import data, theory
from ..compare import compare
from ..energy import mse_loss
from ..inference import InferenceDivergedError
from ..learning import bp_grads, pc_grads, train_compare
from ..model import init_mlp, random_problem
from . import check_size, float64, register

COMPARISON = {  # size: (problems {name: (dataset, widths, epochs)}, seeds, tuned rates, matched lengths, cosine rates,
    #                    Nesterov momentum, float64)
    "smoke": ({"digits": ("digits", [64, 16, 10], 1)}, (0, 1), [0.05, 0.2, 0.8], [0.02, 0.08, 0.32], [0.1, 0.2],
              False, True),
    "chapter": ({"digits": ("digits", [64, 64, 32, 10], 6), "MNIST 5k": ("mnist5k", [784, 64, 10], 1)}, (0, 1, 2),
                [0.025, 0.05, 0.1, 0.2, 0.4, 0.8], [0.01, 0.02, 0.04, 0.08, 0.16, 0.32], [0.05, 0.1, 0.2], False, True),
    "medium": ({"MNIST 5k": ("mnist5k", [784, 128, 64, 10], 10), "MNIST 5k, deep": ("mnist5k", [784] + [128] * 5 + [10], 5)},
               (0, 1, 2), [0.0125, 0.025, 0.05, 0.1, 0.2, 0.4, 0.8], [0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32],
               [0.025, 0.05, 0.1, 0.2], False, False),
    # our reading of App. A.9.2: 784-128-64-10 ReLU, Nesterov 0.9, 5 seeds; rate 1e-4 on a summed MSE = 6.4e-3 on ours
    "paper": ({"MNIST": ("mnist", [784, 128, 64, 10], 10)}, (0, 1, 2, 3, 4), [1.6e-3, 3.2e-3, 6.4e-3, 1.28e-2, 2.56e-2, 5.12e-2],
              [2.5e-3, 5e-3, 1e-2, 2e-2, 4e-2, 8e-2, 0.16], [3.2e-3, 6.4e-3, 1.28e-2], True, False),
}
LINEAR_RUNS = {  # size: (seeds, {name: (widths, PC updates)}); measures are recorded every 1000 updates
    "smoke": ((0, 1), {"wide 4-8-2": ([4, 8, 2], 2000), "bottleneck 4-1-2": ([4, 1, 2], 4000)}),
    "chapter": ((0,), {"wide 4-8-2": ([4, 8, 2], 20_000), "bottleneck 4-1-2": ([4, 1, 2], 200_000)}),
    "medium": ((0, 1, 2, 3, 4), {"wide 4-8-2": ([4, 8, 2], 20_000), "bottleneck 4-1-2": ([4, 1, 2], 200_000),
                                 "wide 16-32-4": ([16, 32, 4], 50_000), "bottleneck 8-1-4": ([8, 1, 4], 1_000_000)}),
    "paper": ((0, 1, 2, 3, 4, 5, 6, 7, 8, 9), {"wide 4-8-2": ([4, 8, 2], 20_000), "bottleneck 4-1-2": ([4, 1, 2], 200_000),
                                               "wide 16-32-4": ([16, 32, 4], 100_000),
                                               "bottleneck 8-1-4": ([8, 1, 4], 4_000_000)}),
}
EVERY = 1000  # PC updates between two records of the linear runs


def _sgd(lr):
    return optax.sgd(lr, momentum=0.9)


def _nesterov(lr):
    return optax.sgd(lr, momentum=0.9, nesterov=True)


def _dataset(name: str) -> Any:
    return data.digits(seed=0) if name == "digits" else data.get(name)


def summarize_pc_vs_bp(result: dict) -> str:
    """The comparisons (:func:`pclib.scale.summarize_comparisons`) and a table of the update cosines per rate."""
    from . import summarize_comparisons

    rows = []
    for lr in result["cosine_lrs"]:
        key = str(lr) if str(lr) in result["cosine"] else lr
        cs, rs, bad = result["cosine"][key], result["ratio"][key], result.get("cosine_diverged", {}).get(key, [])
        if len(cs):
            c, r = np.concatenate([np.ravel(v) for v in cs]), np.concatenate([np.ravel(v) for v in rs])
            rows.append(f"| {float(lr):g} | {len(cs)} | {np.median(c):.3f} | {np.min(c):.3f} | {np.mean(c < 0.9):.2f} "
                        f"| {np.median(r):.2g} | {len(bad)} |")
        else:
            rows.append(f"| {float(lr):g} | 0 | | | | | {len(bad)} |")
    problems = ", ".join(f"{k}: {v['widths']}, {v['epochs']} epochs, {v['train']} training digits"
                         for k, v in result["problems"].items())
    return (f"Problems: {problems}.\n\n" + summarize_comparisons(result["results"]) +
            f"\nCosine between PC's and BP's gradients along PC's training ({result['cosine_problem']}):\n\n"
            "| learning rate | seeds trained | median cosine | min cosine | share below 0.9 | median BP/PC norm "
            "| seeds where PC's inference diverged |\n|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")


@register("ch02_pc_vs_bp", chapter="ch02", title="PC vs BP: tuned, matched step length, and the cosine of their updates",
          draw=lambda result, fig: draw_pc_vs_bp(result, fig), summarize=summarize_pc_vs_bp)
def pc_vs_bp(size: str = "chapter") -> dict:
    r"""PC (20 Euler steps of $\mathrm dt = 0.2$ from the feedforward pass) against BP on ReLU MLPs, from the
    same initialisations and minibatches (batch 64, SGD with momentum 0.9) over several seeds, each at
    its own best learning rate (``"tuned"``) and with normalised steps $\theta \leftarrow \theta - \eta\,g/\lVert g\rVert$
    at each one's best length $\eta$ (``"matched"``); ``results[problem][mode]`` is a
    :class:`pclib.compare.Comparison` (losses, chosen rates, test accuracy, gradient-norm ratios).
    Then, on the first problem, PC is trained at each rate of the cosine grid and
    $\cos(g_{\rm PC}, g_{\rm BP})$ of the raw gradients is recorded at every iteration (Fig. 4C):
    ``cosine[lr]`` and ``ratio[lr]`` ($\lVert g_{\rm BP}\rVert / \lVert g_{\rm PC}\rVert$) hold one array per seed,
    and ``share_below_0.9[lr]`` the mean share of iterations with cosine below 0.9."""
    problems, seeds, lrs, lengths, cos_lrs, nesterov, x64 = COMPARISON[check_size(size)]
    sgd = _nesterov if nesterov else _sgd
    results: dict[str, dict] = {}
    info: dict[str, dict] = {}
    with float64(x64):
        sets = {name: _dataset(ds) for name, (ds, _, _) in problems.items()}
        for name, (_, widths, epochs) in problems.items():
            ds = sets[name]
            info[name] = {"widths": widths, "epochs": epochs, "train": len(ds.x_train), "test": len(ds.x_test)}
            kw = dict(seeds=seeds, optimizer=sgd, act="relu", steps=20, dt=0.2, epochs=epochs, batch_size=64,
                      eval=(ds.x_test, ds.y_test))
            init = partial(_relu_init, widths=tuple(widths))
            results[name] = {mode: compare(init, ds.x_train, ds.y_train, lrs=grid, mode=mode, **kw)
                             for mode, grid in (("tuned", lrs), ("matched", lengths))}
        name = next(iter(problems))
        ds, (_, widths, epochs) = sets[name], problems[name]
        cos: dict[float, list] = {lr: [] for lr in cos_lrs}
        ratio: dict[float, list] = {lr: [] for lr in cos_lrs}
        diverged: dict[float, list] = {lr: [] for lr in cos_lrs}
        for lr in cos_lrs:
            for seed in seeds:
                p0 = init_mlp(jax.random.key(seed), widths, act="relu")
                try:
                    _, h = train_compare(p0, ds.x_train, ds.y_train, optimizer=sgd, lr=lr, epochs=epochs,
                                         batch_size=64, seed=seed, act="relu", steps=20, dt=0.2)
                except InferenceDivergedError:  # PC's training blew up at this rate: no cosine to report
                    diverged[lr].append(seed)
                    continue
                cos[lr].append(h["cosine"])
                ratio[lr].append(h["bp_norm"] / h["pc_norm"])
    share = {lr: float(np.mean([np.mean(c < 0.9) for c in cs])) if cs else float("nan") for lr, cs in cos.items()}
    return {"size": size, "problems": info, "seeds": tuple(seeds), "results": results, "cosine_problem": name,
            "cosine_lrs": list(cos_lrs), "cosine": cos, "ratio": ratio, "share_below_0.9": share,
            "cosine_diverged": diverged}


def _relu_init(key: Any, *, widths: tuple[int, ...]) -> Any:
    return init_mlp(key, list(widths), act="relu")


def draw_pc_vs_bp(result: dict, fig: Any) -> None:
    """Each problem's and protocol's loss curves (mean, min-max over seeds), and the cosine per rate."""
    from ..plotting import COLORS

    runs = [(f"{name}, {mode}", r) for name, by_mode in result["results"].items() for mode, r in by_mode.items()]
    axes = fig.subplots(1, len(runs) + 1, squeeze=False)[0]
    for ax, (title, r) in zip(axes, runs):
        for i, m in enumerate(r.methods):
            it = np.arange(r.losses.shape[-1])
            ax.plot(it, r.losses[i].mean(0), color=COLORS[m], label=f"{m.upper()} ({r.best_lr[i, 0]:.3g})")
            ax.fill_between(it, r.losses[i].min(0), r.losses[i].max(0), color=COLORS[m], alpha=0.25)
        ax.set(xlabel="iteration", yscale="log", title=title)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("batch loss (mean, min-max over seeds)")
    lrs = [lr for lr in result["cosine_lrs"] if len(result["cosine"][lr])]  # rates where PC trained on some seed
    axes[-1].boxplot([np.concatenate(result["cosine"][lr]) for lr in lrs], positions=range(len(lrs)), whis=(0, 100))
    axes[-1].axhline(0.9, color="gray", ls=":", lw=0.8)
    axes[-1].set_xticks(range(len(lrs)), [f"{lr:g}" for lr in lrs])
    axes[-1].set(xlabel="learning rate", ylabel="cosine(PC, BP)", title=f"{result['cosine_problem']}: update cosine")


def _grad_norm(g: Any) -> Any:
    return jnp.sqrt(sum(jnp.sum(v**2) for v in jax.tree_util.tree_leaves(g)))


def linear_measures(p: Any, x: Any, y: Any) -> Any:
    r"""$\mathcal L$, $\mathcal F^*$, $\lVert\nabla_\theta\mathcal L\rVert$, $\lVert\nabla_\theta\mathcal F^*\rVert$ (PC's gradient at the
    exact equilibrium), $\lVert W_L\rVert$ and $-\log p(y\mid x)$ of a linear network, stacked."""
    return jnp.stack([mse_loss(p, x, y, act="linear"), theory.linear_equilibrated_energy(p, x, y),
                      _grad_norm(bp_grads(p, x, y, act="linear")),
                      _grad_norm(jax.grad(theory.linear_equilibrated_energy)(p, x, y)),
                      jnp.linalg.norm(p[-1]["W"]), theory.linear_log_likelihood(p, x, y)])


@partial(jax.jit, static_argnames=("iters", "every"))
def pc_full_batch(params: Any, x: Any, y: Any, *, iters: int, lr: float = 0.05, every: int = EVERY) -> tuple[Any, Any]:
    r"""Full-batch PC with exact E-steps on a linear net, $\theta \leftarrow \theta - \eta\,\partial_\theta F(z^*(\theta), \theta)$
    with $z^*$ from :func:`pclib.theory.linear_equilibrium`: the final weights, and :func:`linear_measures` at
    the start and after every ``every`` updates, shape ``(iters // every + 1, 6)``."""
    def one(p, _):
        g = pc_grads(p, theory.linear_equilibrium(p, x, y), act="linear")
        return jax.tree_util.tree_map(lambda a, b: a - lr * b, p, g), None

    def block(p, _):
        p = jax.lax.scan(one, p, None, length=every)[0]
        return p, linear_measures(p, x, y)

    p_end, rec = jax.lax.scan(block, params, None, length=iters // every)
    return p_end, jnp.concatenate([linear_measures(params, x, y)[None], rec])


def _linear_summary(name: str, rec: np.ndarray, p_end: Any, best: float, lim: Any) -> dict:
    """The quantities the chapter checks, for one run (``nan`` where they do not apply to the shape)."""
    half = len(rec) // 2
    out = {"nll_rises_F_falls": bool(np.all(np.diff(rec[half:, 5]) > 0) and np.all(np.diff(rec[:, 1]) < 0)),
           "grad_L_end_over_start": float(rec[-1, 2] / rec[0, 2]), "L_minus_least_squares": float(rec[-1, 0] - best),
           "W_L_growth": float(rec[-1, 4] / rec[0, 4])}
    if name.startswith("bottleneck"):
        W = np.asarray(p_end[-1]["W"])[:, 0]
        v = W / np.linalg.norm(W)
        predicted = lim.pc_loss - lim.bp_loss
        out.update({"one_minus_cos_to_top_principal": float(1 - abs(v @ lim.pc_directions[:, 0])),
                    "cos_to_reduced_rank": float(abs(v @ lim.bp_directions[:, 0])),
                    "gap_over_predicted_minus_1": float((rec[-1, 0] - lim.bp_loss) / predicted - 1),
                    "grad_L_times_W_L_over_c_minus_1": float(rec[-1, 2] * rec[-1, 4] / lim.pc_grad_scale - 1),
                    "F_gap_closed": float((rec[-1, 1] - lim.pc_energy_inf) / (rec[0, 1] - lim.pc_energy_inf))})
    return out


def summarize_linear_runs(result: dict) -> str:
    """Per network shape: the range over seeds of every quantity of :func:`_linear_summary`."""
    lines = []
    for name, runs in result["runs"].items():
        iters = (len(np.asarray(runs[0]["record"])) - 1) * result["every"]
        lines.append(f"**{name}**, {len(runs)} seed(s), {iters:,} PC updates:\n\n| quantity | min over seeds | max over seeds |\n|---|---|---|")
        for key in runs[0]["summary"]:
            vals = np.asarray([float(r["summary"][key]) for r in runs])
            lines.append(f"| `{key}` | {vals.min():.3g} | {vals.max():.3g} |")
        lines.append("")
    return "\n".join(lines)


@register("ch02_linear_runs", chapter="ch02", title="Theorem 3.6: full-batch PC with exact E-steps on linear nets",
          draw=lambda result, fig: draw_linear_runs(result, fig), summarize=summarize_linear_runs)
def linear_runs(size: str = "chapter") -> dict:
    r"""Full-batch PC with exact E-steps and learning rate 0.05 (:func:`pc_full_batch`, float64) on random linear
    problems (``pclib.random_problem``, 32 samples) per seed: wide nets, where PC reaches the least-squares
    optimum, and width-1 bottlenecks, where it approaches a point at infinity above backprop's optimum.
    ``runs[name]`` lists, per seed, the record (:func:`linear_measures` every :data:`EVERY` updates), the final
    weights, the least-squares loss, :func:`pclib.theory.low_rank_limits` (rank 1) and a summary of the checks."""
    seeds, shapes = LINEAR_RUNS[check_size(size)]
    runs: dict[str, list] = {}
    with float64(True):
        for name, (widths, iters) in shapes.items():
            for seed in seeds:
                params, x, y = random_problem(seed, widths, act="linear", n=32)
                p_end, rec = pc_full_batch(params, x, y, iters=iters)
                rec = np.asarray(rec)
                best, lim = theory.least_squares_loss(x, y), theory.low_rank_limits(x, y, rank=1)
                runs.setdefault(name, []).append({"seed": seed, "record": rec, "params": p_end, "least_squares": best,
                                                  "limits": lim, "summary": _linear_summary(name, rec, p_end, best, lim)})
    return {"size": size, "every": EVERY, "seeds": tuple(seeds), "runs": runs}


def draw_linear_runs(result: dict, fig: Any) -> None:
    r"""$\lVert\nabla_\theta\mathcal L\rVert$ (backprop) and $\lVert\nabla_\theta\mathcal F^*\rVert$ (PC) along training, every seed."""
    from ..plotting import COLORS

    axes = fig.subplots(1, len(result["runs"]), squeeze=False)[0]
    for ax, (name, runs) in zip(axes, result["runs"].items()):
        for i, run in enumerate(runs):
            rec = np.asarray(run["record"])
            k = np.arange(1, len(rec)) * result["every"]
            ax.loglog(k, rec[1:, 2], color=COLORS["bp"], alpha=0.6, label=r"$\|\nabla_\theta L\|$" if i == 0 else None)
            ax.loglog(k, rec[1:, 3], color=COLORS["pc"], alpha=0.6, label=r"$\|\nabla_\theta F^*\|$ (PC)" if i == 0 else None)
        ax.set(xlabel="PC update", title=f"{name}, {len(runs)} seed(s)")
        ax.legend(fontsize=7)
