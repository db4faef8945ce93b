r"""Chapter 3's precision-ratio sweeps (Millidge et al. 2022, Fig. 2): where the clamped equilibrium sits
between backprop and target propagation as the ratio $\rho = \pi_{l+1}/\pi_l$ grows, on the paper's
networks (width 5, one hidden layer; linear, tanh and non-square linear), and on deep, wide tanh networks
with the layerwise ratio, where the one-hidden-layer theorem does not apply.

Every tanh point is an equilibrium found by Newton–CG and certified: its residual
$\max_{i,l,k}\lvert\partial F_i/\partial z_{l,k}\rvert$ is recomputed by ``jax.grad`` and returned with the tolerance
(:func:`pclib.theory.interpolation_sweep`). All of it runs in float64."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import theory
from ..inference import NotConvergedError
from ..model import forward
from . import check_size, float64, register

SWEEPS = {  # size: (nets per linear sweep, 5-5-5 tanh nets, ratios from 1e-5 to 1e5,
    #                deep tanh shapes (weight layers, width), deep tanh nets per shape)
    "smoke": (2, 1, 5, ((3, 4),), 1),
    "chapter": (10, 4, 21, (), 0),
    "medium": (50, 20, 41, ((4, 32), (7, 32), (10, 32), (4, 128), (7, 128), (10, 128)), 20),
    "paper": (50, 20, 41, ((4, 32), (7, 32), (10, 32), (4, 128), (7, 128), (10, 128)), 50),
}
SHAPES = {"tall": [5, 3, 5], "wide": [5, 8, 3]}  # non-square W_2: 5 x 3 and 3 x 8
DEEP_SPAN = 6.0  # decades between the smallest and largest precision at either end of a deep sweep


def deep_ratios(n_layers: int, n: int = 13) -> np.ndarray:
    r"""The layerwise ratios swept on a deep network: $\rho \in [10^{-s}, 10^{s}]$ with $s$ = :data:`DEEP_SPAN` $/(L-1)$,
    so the precisions $\pi_l = \rho^{l-1}$ span at most $10^6$. The residual tolerance is absolute
    ($10^{-10}\max_l\pi_l$), so a wider span would leave the lowest layers' equilibrium uncertified in effect."""
    s = DEEP_SPAN / (n_layers - 1)
    return np.logspace(-s, s, n)


def paper_net(seed: int, widths: list[int], n: int = 16) -> tuple[list, Any, Any]:
    """Millidge et al. (2022), App. A.9.1: W ~ N(0, 0.05), x ~ N(1, 1), y ~ N(-1, 1), no biases."""
    ks = jax.random.split(jax.random.key(seed), len(widths) + 1)
    params = [{"W": np.sqrt(0.05) * jax.random.normal(ks[i], (widths[i + 1], widths[i]))} for i in range(len(widths) - 1)]
    return params, 1.0 + jax.random.normal(ks[-2], (n, widths[0])), -1.0 + jax.random.normal(ks[-1], (n, widths[-1]))


def ridge_path(params: list, x: Any, y: Any, ratios: Any, act: str) -> np.ndarray:
    r"""The ridge-path theorem's $z_1^*(\rho) = t + (I + \rho M)^{-1}(a - t)$, $a = f(W_1x)$, $M = W_2^\top W_2$:
    its relative distance $\lVert z_1^* - t\rVert / \lVert t\rVert$ to the TP target per ratio."""
    a, W = forward(params, x, act=act)[1], params[1]["W"]
    t = jnp.linalg.solve(W, y.T).T
    M = W.T @ W
    return np.array([theory.relative_error(t + jnp.linalg.solve(jnp.eye(len(M)) + rho * M, (a - t).T).T, t)
                     for rho in ratios])


def within_bound(r: dict, params: list, x: Any, y: Any) -> bool:
    r"""The theorem's bound $\lVert z^* - t\rVert \le \lVert a - t\rVert / (1 + \rho s_{\min})$, $s_{\min}$ the smallest
    non-zero eigenvalue of $W_2^\top W_2$, at every ratio of the sweep ``r`` (linear, $t = t_D$)."""
    a, W = np.asarray(x @ params[0]["W"].T), np.asarray(params[1]["W"])
    t = a + (np.asarray(y) - a @ W.T) @ np.linalg.pinv(W).T  # t_D, which is W^{-1} y for a square W
    s2 = np.linalg.svd(W, compute_uv=False) ** 2
    return bool(np.all(r["dist_tp"] <= np.linalg.norm(a - t) / (1 + r["ratios"] * s2.min()) / np.linalg.norm(t) * (1 + 1e-9)))


def monotone(r: dict) -> bool:
    """All four trends of a sweep strictly monotone: towards TP, away from the feedforward pass and backprop."""
    flags = [np.diff(r["dist_tp"]) < 0, np.diff(r["angle_tp"]) < 0, np.diff(r["dist_ff"]) > 0]
    return bool(np.all(np.concatenate(flags + [np.diff(r["angle_bp"]) > 0])))


def draw_sweeps(result: dict, fig: Any) -> None:
    """Mean angles to backprop and TP over the networks: the paper's nets, and each deep tanh shape."""
    from ..plotting import COLORS

    groups = {"5-5-5, linear": result["sweeps"]["linear"], "5-5-5, tanh": result["sweeps"]["tanh"]}
    groups.update({f"tanh, {k} (layerwise)": v for k, v in result["deep_tanh"].items() if v})
    axes = fig.subplots(1, len(groups), sharey=True, squeeze=False)[0]
    for ax, (title, rs) in zip(axes, groups.items()):
        rho = rs[0]["ratios"]
        for key, color, lab in (("angle_bp", COLORS["bp"], "to backprop"), ("angle_tp", COLORS["theory"], "to TP")):
            for i, r in enumerate(rs):
                ax.semilogx(rho, r[key], color=color, lw=0.8, alpha=0.6, label=lab if i == 0 else None)
        ax.set(xlabel=r"precision ratio $\rho$", title=f"{title}, {len(rs)} nets", ylim=(0, 95))
        ax.legend(fontsize=7)
    axes[0].set_ylabel("angle (degrees)")


def summarize_sweeps(result: dict) -> str:
    """Counts of nets per group, the theorem's bound, the tanh ridge-path gap, and the deep shapes' summaries."""
    sw = result["sweeps"]
    lines = [f"{len(sw['linear'])} linear 5-5-5 nets and {len(sw['tanh'])} tanh 5-5-5 nets, "
             f"{len(np.asarray(result['ratios']))} ratios from 1e-5 to 1e5; linear sweeps within the bound: "
             f"{int(np.sum(result['bounds_ok']))} of {len(result['bounds_ok'])}; largest relative gap of a tanh sweep "
             f"to the ridge path: {max(result['ridge_gap']):.1e}; monotone in all four trends: linear "
             f"{sum(monotone(r) for r in sw['linear'])} of {len(sw['linear'])}, tanh {sum(monotone(r) for r in sw['tanh'])} "
             f"of {len(sw['tanh'])}.", ""]
    if result["deep_summary"]:
        keys = ["nets", "monotone", "worst_residual_over_tol", "max_angle_bp_at_smallest_ratio",
                "max_angle_tp_at_largest_ratio", "max_dist_tp_at_largest_ratio"]
        lines += ["Deep tanh nets (layerwise ratio, every point certified by its residual):", "",
                  "| shape | " + " | ".join(f"`{k}`" for k in keys) + " |", "|---" * (len(keys) + 1) + "|"]
        for shape, d in result["deep_summary"].items():
            lines.append(f"| {shape} | " + " | ".join(f"{float(d[k]):.3g}" if k in d else "" for k in keys) + " |")
        lines.append("")
    lines.append("Nets whose inference did not converge: " + ("; ".join(result["deep_failed"]) or "none") + ".")
    return "\n".join(lines) + "\n"


@register("ch03_precision_sweeps", chapter="ch03", title="Precision-ratio sweeps from backprop to target propagation",
          draw=draw_sweeps, summarize=summarize_sweeps)
def precision_sweeps(size: str = "chapter") -> dict:
    r"""The chapter's sweeps of $\rho$ from $10^{-5}$ to $10^5$ on :func:`paper_net` networks: 5-5-5 linear (closed
    form), 5-5-5 tanh (Newton–CG to the automatic tolerance, warm-started, every other ratio), and the
    non-square 5-3-5 (``"tall"``) and 5-8-3 (``"wide"``, against the pseudo-inverse and the difference targets);
    with :func:`within_bound` per linear sweep, the tanh sweeps' largest relative gap to :func:`ridge_path`,
    and the wide nets' plateau gap at $\rho = 10^5$ against $\lVert(I - W_2^+W_2)a\rVert / \lVert t\rVert$.
    Then, for each deep tanh shape, sweeps of the layerwise ratio over :func:`deep_ratios` on
    :func:`pclib.theory.random_invertible_problem` networks (singular values in [1/2, 2], 8 samples), each
    point certified; a net whose inference does not converge is listed in ``deep_failed``."""
    n_sweep, n_tanh, n_grid, deep_shapes, n_deep = SWEEPS[check_size(size)]
    ratios = np.logspace(-5, 5, n_grid)
    sweeps: dict[str, list] = {"linear": [], "tanh": [], "tall": [], "wide": [], "wide, difference": []}
    bounds_ok, ridge_gap, plateau_gap = [], [], []
    deep: dict[str, list] = {}
    failed: list[str] = []
    with float64(True):
        for seed in range(n_sweep):
            params, x, y = paper_net(seed, [5, 5, 5])
            sweeps["linear"].append(theory.interpolation_sweep(params, x, y, ratios, act="linear", out_act="linear"))
            bounds_ok.append(within_bound(sweeps["linear"][-1], params, x, y))
            for shape, widths in SHAPES.items():
                params, x, y = paper_net(seed, widths)
                sweeps[shape].append(theory.interpolation_sweep(params, x, y, ratios, act="linear", out_act="linear",
                                                                pinv=True))
                if shape == "wide":
                    sweeps["wide, difference"].append(theory.interpolation_sweep(
                        params, x, y, ratios, act="linear", out_act="linear", pinv=True, difference=True))
                    W, a = np.asarray(params[1]["W"]), np.asarray(x @ params[0]["W"].T)
                    t = np.asarray(y) @ np.linalg.pinv(W).T
                    null = a - a @ W.T @ np.linalg.pinv(W).T  # (I - W^+ W) a, per sample
                    plateau_gap.append(abs(sweeps["wide"][-1]["dist_tp"][-1] / (np.linalg.norm(null) / np.linalg.norm(t)) - 1))
                bounds_ok.append(within_bound(sweeps["wide, difference" if shape == "wide" else shape][-1], params, x, y))
        for seed in range(n_tanh):
            params, x, y = paper_net(seed, [5, 5, 5])
            r = theory.interpolation_sweep(params, x, y, ratios[::2], act="tanh", out_act="linear", tol="auto", max_steps=200)
            sweeps["tanh"].append(r)
            ridge_gap.append(float(np.max(np.abs(r["dist_tp"] / ridge_path(params, x, y, ratios[::2], "tanh") - 1))))
        for n_layers, width in deep_shapes:
            key = f"{n_layers} layers x {width}"
            deep[key] = []
            for seed in range(n_deep):
                params, x, y = theory.random_invertible_problem(seed, width, n_layers, act="tanh", out_act="linear", n=8,
                                                                spread=2.0)
                try:
                    deep[key].append(theory.interpolation_sweep(params, x, y, deep_ratios(n_layers), act="tanh", out_act="linear",
                                                                scheme="geometric", tol="auto", max_steps=500))
                except NotConvergedError as err:
                    failed.append(f"{key}, seed {seed}: {err}")
    return {"size": size, "ratios": ratios, "sweeps": sweeps, "bounds_ok": bounds_ok, "ridge_gap": ridge_gap,
            "plateau_gap": plateau_gap, "deep_tanh": deep, "deep_failed": failed,
            "deep_summary": {k: deep_summary(v) for k, v in deep.items()}}


def deep_summary(rs: list[dict]) -> dict:
    """What the chapter checks on a group of deep sweeps: certificates, monotone trends, the two ends."""
    if not rs:
        return {"nets": 0}
    smallest = [np.min(np.asarray(theory.ratio_precisions(rho, len(r["angle_bp_layers"][0]) + 1)))
                for r in rs for rho in (r["ratios"][0], r["ratios"][-1])]  # the smallest precision at either end
    return {"nets": len(rs), "worst_residual_over_tol": float(max(np.max(r["residual"] / r["tol"]) for r in rs)),
            "worst_residual_over_smallest_precision": float(max(np.max(r["residual"]) for r in rs) / min(smallest)),
            "monotone": int(sum(monotone(r) for r in rs)),
            "max_angle_bp_at_smallest_ratio": float(max(r["angle_bp"][0] for r in rs)),
            "max_angle_tp_at_largest_ratio": float(max(r["angle_tp"][-1] for r in rs)),
            "max_dist_tp_at_largest_ratio": float(max(r["dist_tp"][-1] for r in rs))}
