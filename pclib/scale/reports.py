r"""Markdown tables of chapter 5's scale experiments (:mod:`pclib.scale.saddles`), written next to their JSON
for the book's "Results at scale" page. Each function takes the result as :func:`pclib.scale.from_json`
returns it (dict keys are strings)."""

from __future__ import annotations

from typing import Any

import numpy as np


def _times(t: Any, budget: int) -> str:
    return ", ".join("never" if int(v) >= budget else str(int(v)) for v in np.ravel(t))


def escape_depth(result: dict) -> str:
    """Escape times per depth, method and step length (one entry per seed), then the truncated-inference runs."""
    it, lrs, frac = int(result["iters"]), list(result["lrs"]), result["frac"]
    pc, bp = result["sweep"]["pc"], result["sweep"]["bp"]
    lines = [f"Linear nets of width {result['width']}, {result['samples']} training samples, matched step length; "
             f"first iteration with the evaluation loss below {frac:g} of its start (budget {it}; one entry per seed). "
             "PC here descends $\\mathcal F^*$ (converged inference).", "",
             "| hidden layers | step length | PC: $\\mathcal L$ | PC: $\\mathcal F^*$ | BP: $\\mathcal L$ |", "|---|---|---|---|---|"]
    for d, H in enumerate(result["depths"]):
        for k, lr in enumerate(lrs):
            lines.append(f"| {H} | {float(lr):g} | {_times(np.asarray(pc['t_L'])[d, k], it)} | "
                         f"{_times(np.asarray(pc['t_F'])[d, k], it)} | {_times(np.asarray(bp['t_L'])[d, k], it)} |")
    if result["euler"]:
        e_it = int(result["euler_iters"])
        lines += ["", f"PC with 50 Euler steps of dt = 0.1 (truncated inference), against BP for nonlinear nets (budget {e_it}):",
                  "", "| net | step length | PC: $\\mathcal L$ | BP: $\\mathcal L$ | end of PC's run: max dt·λ_max, top-layer ‖g₅₀‖ / ‖∇F*‖ |",
                  "|---|---|---|---|---|"]
        for name, run in result["euler"].items():
            diag = run.get("diagnosis")
            extra = ""
            if diag is not None:
                ratio = np.asarray(diag["grad_ratio"], float)
                extra = f"{np.max(diag['dt_lambda_max']):.2f}, {np.min(ratio[..., -1]):.2g}–{np.max(ratio[..., -1]):.2g}"
            for k, lr in enumerate(lrs):
                tb = _times(np.asarray(run["bp"]["t_L"])[k], e_it) if "bp" in run else "–"
                lines.append(f"| {name} | {float(lr):g} | {_times(np.asarray(run['pc']['t_L'])[k], e_it)} | {tb} | {extra} |")
    for name, run in result.get("sgd", {}).items():
        lines.append(f"\nPlain SGD, {name}: PC {_times(run['pc']['t_L'], int(result['euler_iters']))}; "
                     f"BP {_times(run['bp']['t_L'], int(result['euler_iters']))}")
    return "\n".join(lines) + "\n"


def energy_along_training(result: dict) -> str:
    """The closed form against converged inference, and F* at the start and end of training, per data set and depth."""
    lines = [f"Largest relative gap between the closed-form $\\mathcal F^*$ and the energy after converged inference, "
             f"over all checkpoints: {result['gap']:.1e}.", "",
             "| data | hidden layers | checkpoints | $\\mathcal F^*$ at start | at end |", "|---|---|---|---|---|"]
    for name, runs in result["runs"].items():
        for H, run in runs.items():
            curve = np.asarray(run["curve"], float)
            lines.append(f"| {name} | {H} | {len(np.asarray(run['rows']))} | {curve[0]:.3g} | {curve[-1]:.3g} |")
    return "\n".join(lines) + "\n"


def origin_spectra(result: dict) -> str:
    """Per net: the theorem's extreme eigenvalues, the probes' and dense Hessians' largest gaps, and Lanczos."""
    lines = [f"{result['digits']} digits (dense Hessians on {result['dense_digits']}).", "",
             "| hidden layers | widths | weights | λ_min(∇²L(0)) theorem | λ_min(∇²F*(0)) theorem | Lanczos | "
             "HVP probe gap | dense gap |", "|---|---|---|---|---|---|---|---|"]
    for H, r in result["nets"].items():
        dense = f"{r['dense_gap']:.1e}" if "dense_gap" in r else "not run"
        lines.append(f"| {H} | {'-'.join(str(int(w)) for w in np.ravel(r['widths']))} | {int(r['weights'])} | "
                     f"{np.min(r['theorem_L']):.4g} | {np.min(r['theorem_F']):.4g} | {r['lanczos_F']:.4g} | "
                     f"{r['probe_gap']:.1e} | {dense} |")
    return "\n".join(lines) + "\n"
