r"""Chapter 5's larger experiments (Innocenti, Achour, Singh & Buckley 2024, "Only strict saddles in the
energy landscape of predictive coding networks?"):

- :func:`energy_along_training` (their Fig. 1): the closed-form equilibrated energy $\mathcal F^*$ against
  the energy after converged iterative inference, along PC training of deep linear networks;
- :func:`origin_spectra` (their Figs. 3-4): the Hessians of $\mathcal L$ and $\mathcal F^*$ at the origin of
  linear networks on MNIST, at the paper's widths, against the theorem;
- :func:`escape_across_depth` (their Fig. 5): escape from near the origin, PC against BP at matched step
  length, across depth, for linear, tanh and ReLU networks.

Each is ``run(size)`` as in :mod:`pclib.scale`; :func:`matched_escape` is the escape runs' one code path.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import data
from ..energy import mse_loss
from ..escape import normalize_updates
from ..inference import infer
from ..learning import pc_grads
from ..model import init_mlp
from ..theory import equilibrated_energy
from . import check_size, register, reports


def _stack(trees: list) -> Any:
    return jax.tree_util.tree_map(lambda *a: jnp.stack(a), *trees)


def log_grid(iters: int, points: int = 120) -> np.ndarray:
    """About ``points`` iterations from 0 to ``iters``, log-spaced (every iteration early on), 0 and ``iters`` included."""
    return np.unique(np.concatenate([[0], np.geomspace(1, iters, points).astype(int), [iters]]))


def _batches(seeds: tuple[int, ...], iters: int, n: int, batch: int) -> np.ndarray:
    """Minibatch indices, shape ``(len(seeds), iters, batch)``: seed ``s``'s ``t``-th batch is drawn without
    replacement by ``np.random.default_rng([s, t])`` (the draws the chapter's runs use)."""
    return np.stack([[np.random.default_rng([s, t]).choice(n, batch, replace=False) for t in range(iters)]
                     for s in seeds])


def matched_escape(x: Any, y: Any, *, widths: list[int], lrs: tuple[float, ...], iters: int, method: str,
                   act: str = "linear", pc: str = "euler", seeds: tuple[int, ...] = (0, 1, 2), batch: int = 64,
                   scale: float = 5e-3, eval_xy: tuple[Any, Any] | None = None, frac: float = 0.9,
                   matched: bool = True, points: int = 120) -> dict:
    r"""Train bias-free MLPs from $W_l \sim \mathcal N(0, \text{scale}^2)$ by minibatch SGD, for every step
    length in ``lrs`` and every seed at once (one compiled program).

    With ``matched=True`` every update is the gradient rescaled to global norm ``lr``,
    $\theta \leftarrow \theta - \eta\,g/\lVert g\rVert$ (matched step length: methods differ only in direction);
    otherwise plain SGD at learning rate ``lr``. ``method="bp"`` follows $\nabla\mathcal L$; ``method="pc"``
    follows PC's weight gradient after ``pc="euler"``: 50 inference steps of $\mathrm dt = 0.1$ from the
    feedforward pass (truncated inference), or ``pc="exact"`` (linear nets): $\nabla\mathcal F^*$ of the
    minibatch from the closed form, i.e. converged inference.

    $\mathcal L$ (and, for linear nets, $\mathcal F^*$) on ``eval_xy`` (default the training data) is taken after
    every step. Returns ``grid`` (the recorded iterations, :func:`log_grid`), ``L`` and ``F`` at them, shape
    ``(len(lrs), len(seeds), len(grid))`` (``F`` is ``None`` for nonlinear nets), ``t_L`` and ``t_F``: the first
    iteration with the value below ``frac`` times its start (``iters`` if never: no escape within the budget),
    shape ``(len(lrs), len(seeds))``, and ``last``: the final weights (leading axes lrs, seeds).
    """
    if method not in ("pc", "bp") or pc not in ("euler", "exact") or (pc == "exact" and act != "linear"):
        raise ValueError(f"method must be 'pc' or 'bp' and pc 'euler' or 'exact' (linear nets only); "
                         f"got {method!r}, {pc!r} with act {act!r}")
    x, y = jnp.asarray(x), jnp.asarray(y)
    xe, ye = (x, y) if eval_xy is None else (jnp.asarray(eval_xy[0]), jnp.asarray(eval_xy[1]))
    linear = act == "linear"
    loss = lambda p, a, b: mse_loss(p, a, b, act=act)  # noqa: E731

    def grad(p, a, b):
        if method == "bp":
            return jax.grad(loss)(p, a, b)
        if pc == "exact":
            return jax.grad(equilibrated_energy)(p, a, b)
        return pc_grads(p, infer(p, a, b, act=act, steps=50, dt=0.1, check=False).activities, act=act)

    values = lambda p: (loss(p, xe, ye), equilibrated_energy(p, xe, ye) if linear else jnp.zeros((), xe.dtype))  # noqa: E731
    p0 = _stack([init_mlp(jax.random.key(s), widths, bias=False, scale=scale, dtype=x.dtype) for s in seeds])
    idx = jnp.asarray(_batches(seeds, iters, x.shape[0], batch))

    def one(lr, p, idx_s):
        opt = optax.chain(normalize_updates(matched), optax.sgd(lr))
        L0, F0 = values(p)

        def body(carry, i):
            p, st, tL, tF, k = carry
            u, st = opt.update(grad(p, x[i], y[i]), st, p)
            p = optax.apply_updates(p, u)
            L, F = values(p)
            tL = jnp.where((tL == iters) & (L < frac * L0), k, tL)
            tF = jnp.where((tF == iters) & (F < frac * F0), k, tF)
            return (p, st, tL, tF, k + 1), (L, F)

        start = (p, opt.init(p), jnp.asarray(iters), jnp.asarray(iters), jnp.asarray(1))
        (last, _, tL, tF, _), (Ls, Fs) = jax.lax.scan(body, start, idx_s)
        return jnp.concatenate([L0[None], Ls]), jnp.concatenate([F0[None], Fs]), tL, tF, last

    run = jax.jit(jax.vmap(jax.vmap(one, in_axes=(None, 0, 0)), in_axes=(0, None, None)))
    Ls, Fs, tL, tF, last = run(jnp.asarray(lrs, x.dtype), p0, idx)
    grid = log_grid(iters, points)
    return {"grid": grid, "L": np.asarray(Ls)[..., grid], "F": np.asarray(Fs)[..., grid] if linear else None,
            "t_L": np.asarray(tL), "t_F": np.asarray(tF) if linear else None, "last": last}


def _padded_values(p: list, noise: Any, x: Any, y: Any) -> tuple[Any, Any]:
    r"""$\mathcal L$ and $\mathcal F^*$ of a bias-free linear net on ``(x, y)``, with the noise of hidden layer $\ell$
    switched by ``noise[l - 1]`` (1: unit variance, 0: none, for an inserted identity layer): $r_i = y_i - Px_i$ with
    $P = W_L\cdots W_1$, $\mathcal L = \frac12\operatorname{tr}\Sigma_{rr}$ and
    $\mathcal F^* = \frac12\operatorname{tr}(S^{-1}\Sigma_{rr})$, $S = I + \sum_{\ell<L}\text{noise}_\ell M_\ell M_\ell^\top$,
    $M_\ell = W_L\cdots W_{\ell+1}$ (Thm 1). The product is formed
    from the top, $d_L$ rows at a time, so the cost per sample is $d_0 d_L$."""
    M = jnp.eye(p[-1]["W"].shape[0], dtype=x.dtype)
    S = M
    for l in range(len(p) - 1, 0, -1):  # M_l = W_L ... W_{l+1}; p[l] is W_{l+1}
        M = M @ p[l]["W"]
        S = S + noise[l - 1] * (M @ M.T)
    r = y - x @ (M @ p[0]["W"]).T
    Srr = r.T @ r / x.shape[0]
    return 0.5 * jnp.trace(Srr), 0.5 * jnp.trace(jnp.linalg.solve(S, Srr))


def pad_linear(p: list, depth: int) -> tuple[list, np.ndarray]:
    """A bias-free linear net with ``len(p) - 1 >= 1`` hidden layers of equal width as one with ``depth`` hidden
    layers: identity layers inserted after the first, which leave the output and (without noise) $S$ unchanged.
    Returns the layers and the 0/1 mask of the real ones."""
    w = p[0]["W"].shape[0]
    extra = depth + 1 - len(p)
    eye = {"W": jnp.eye(w, dtype=p[0]["W"].dtype)}
    return [p[0]] + [eye] * extra + list(p[1:]), np.array([1.0] + [0.0] * extra + [1.0] * (len(p) - 1))


def linear_depth_sweep(x: Any, y: Any, *, width: int, depths: tuple[int, ...], lrs: tuple[float, ...], iters: int,
                       seeds: tuple[int, ...] = (0, 1, 2), batch: int = 64, scale: float = 5e-3,
                       eval_xy: tuple[Any, Any] | None = None, frac: float = 0.9, matched: bool = True,
                       points: int = 120) -> dict:
    r""":func:`matched_escape` for bias-free *linear* nets with ``depths`` hidden layers of ``width``, PC at converged
    inference (normalised descent on the minibatch's $\mathcal F^*$) and BP (on $\mathcal L$), every depth, method,
    step length and seed in ONE compiled program: each net is padded to the largest depth by identity layers
    that are neither trained nor noisy (:func:`pad_linear`), which changes neither its output, its $\mathcal L$, its
    $\mathcal F^*$ nor their gradients in the real layers. $\mathcal L$ and $\mathcal F^*$ on ``eval_xy`` are taken after
    every step.

    Returns ``grid``, and for each method ``"pc"``, ``"bp"``: ``L``, ``F`` of shape ``(depths, lrs, seeds, grid)``,
    ``t_L``, ``t_F`` of shape ``(depths, lrs, seeds)`` (``iters`` where never below ``frac`` of the start) and
    ``last``, the final real layers of each depth (a list over depths; leading axes lrs, seeds)."""
    x, y = jnp.asarray(x), jnp.asarray(y)
    xe, ye = (x, y) if eval_xy is None else (jnp.asarray(eval_xy[0]), jnp.asarray(eval_xy[1]))
    top, dt = max(depths), x.dtype
    nets, masks = [], []
    for H in depths:
        for s in seeds:
            padded, mask = pad_linear(init_mlp(jax.random.key(s), [x.shape[1]] + [width] * H + [y.shape[1]],
                                               bias=False, scale=scale, dtype=dt), top)
            nets.append(padded)
            masks.append(mask)
    p0 = jax.tree_util.tree_map(lambda a: a.reshape((len(depths), len(seeds)) + a.shape[1:]), _stack(nets))
    mask = jnp.asarray(np.array(masks).reshape(len(depths), len(seeds), -1), dt)
    idx = jnp.asarray(_batches(seeds, iters, x.shape[0], batch))

    def one(is_pc, lr, p, m, idx_s):
        opt = optax.chain(normalize_updates(matched), optax.sgd(lr))
        noise = m[:-1]  # hidden layer l (the output of layer l) is noisy iff layer l is real
        L0, F0 = _padded_values(p, noise, xe, ye)

        def objective(p, i):
            L, F = _padded_values(p, noise, x[i], y[i])
            return jnp.where(is_pc, F, L)

        def body(carry, i):
            p, st, tL, tF, k = carry
            g = jax.grad(objective)(p, i)
            g = [{"W": layer["W"] * m[l]} for l, layer in enumerate(g)]  # identity layers stay identities
            u, st = opt.update(g, st, p)
            p = optax.apply_updates(p, u)
            L, F = _padded_values(p, noise, xe, ye)
            tL = jnp.where((tL == iters) & (L < frac * L0), k, tL)
            tF = jnp.where((tF == iters) & (F < frac * F0), k, tF)
            return (p, st, tL, tF, k + 1), (L, F)

        start = (p, opt.init(p), jnp.asarray(iters), jnp.asarray(iters), jnp.asarray(1))
        (last, _, tL, tF, _), (Ls, Fs) = jax.lax.scan(body, start, idx_s)
        return jnp.concatenate([L0[None], Ls]), jnp.concatenate([F0[None], Fs]), tL, tF, last

    per_seed = jax.vmap(one, in_axes=(None, None, 0, 0, 0))
    per_lr = jax.vmap(per_seed, in_axes=(None, 0, None, None, None))
    per_depth = jax.vmap(per_lr, in_axes=(None, None, 0, 0, None))
    run = jax.jit(jax.vmap(per_depth, in_axes=(0, None, None, None, None)))
    Ls, Fs, tL, tF, last = run(jnp.asarray([True, False]), jnp.asarray(lrs, dt), p0, mask, idx)
    grid = log_grid(iters, points)
    out: dict[str, Any] = {"grid": grid}
    for k, method in enumerate(("pc", "bp")):
        keep = [[l for l in range(top + 1) if masks[d * len(seeds)][l]] for d in range(len(depths))]
        out[method] = {"L": np.asarray(Ls[k])[..., grid], "F": np.asarray(Fs[k])[..., grid],
                       "t_L": np.asarray(tL[k]), "t_F": np.asarray(tF[k]),
                       "last": [[jax.tree_util.tree_map(lambda a, d=d: a[k, d], last[l]) for l in keep[d]]
                                for d in range(len(depths))]}
    return out


# --- Fig. 5: escape from near the origin across depth ------------------------------------------------

ESCAPE = {  # size: settings; "data": "toy" (float64 Gaussian teacher data) or a pclib.data name (float32)
    "smoke": dict(data="toy", n=128, d=(6, 3), samples=None, width=4, depths=(1, 2, 3), lrs=(0.02,), iters=60,
                  frac=0.9, euler={"linear": (2,), "tanh": (1,)}, euler_iters=30, sgd={"tanh": (1,)}, sgd_lr=0.05),
    "chapter": dict(data="toy", n=512, d=(10, 5), samples=None, width=16, depths=(1, 2, 3, 4, 5, 6), lrs=(0.02,),
                    iters=3000, frac=0.9, euler={"linear": (6,)}, euler_iters=3000, sgd={}, sgd_lr=None),
    "medium": dict(data="mnist5k", n=None, d=None, samples=None, width=64, depths=(2, 4, 6, 8, 10), lrs=(0.02, 0.1),
                   iters=3000, frac=0.8, euler={"linear": (4, 8), "tanh": (2, 4, 8), "relu": (2, 4, 8)},
                   euler_iters=2000, sgd={}, sgd_lr=None),
    "paper": dict(data="mnist", n=None, d=None, samples=None, width=500, depths=(2, 4, 6, 8, 10), lrs=(0.02, 0.1),
                  iters=3000, frac=0.8, euler={a: (2, 4, 6, 8, 10) for a in ("linear", "tanh", "relu")},
                  euler_iters=3000, sgd={a: (2, 4, 6, 8, 10) for a in ("linear", "tanh", "relu")}, sgd_lr=1e-3),
}


def escape_data(size: str) -> tuple[Any, Any, tuple[Any, Any]]:
    """The training inputs and targets of :func:`escape_across_depth` at ``size`` and the evaluation set: the
    toy Gaussian teacher data itself (float64), or MNIST digits normalised as the paper did (minus 0.1307,
    over 0.3081) with one-hot targets (float32), evaluated on the first 256 training digits."""
    s = ESCAPE[check_size(size)]
    if s["data"] == "toy":
        ds = data.gaussian(n=s["n"], d_in=s["d"][0], d_out=s["d"][1], seed=0)
        x, y = jnp.asarray(ds.x_train, jnp.float64), jnp.asarray(ds.y_train, jnp.float64)
        return x, y, (x, y)
    ds = data.get(s["data"])
    end = ds.x_train.shape[0] if s["samples"] is None else s["samples"]
    x = jnp.asarray((ds.x_train[:end] - 0.1307) / 0.3081, jnp.float32)
    y = jnp.asarray(ds.y_train[:end], jnp.float32)
    return x, y, (x[:256], y[:256])


def truncation_diagnosis(last: Any, x: Any, y: Any, *, steps: int = 50, dt: float = 0.1) -> dict:
    r"""At the final weights of linear PC runs (leading axes lrs, seeds): per layer, the norm of PC's gradient
    after ``steps`` Euler steps of ``dt`` over that of $\nabla\mathcal F^*$ (the equilibrium's), and
    $\mathrm{dt}\,\lambda_{\max}$ of the activity Hessian: Euler inference is stable only while it is below 2; and
    ``top_share``, $\lVert g_L\rVert^2 / \sum_\ell \lVert g_\ell\rVert^2$ of the truncated PC gradient $g$: the fraction of a
    normalised step's squared length that goes into the top layer (on ``x, y``); ``norms``: each layer's
    Frobenius norm $\lVert W_\ell\rVert_F$."""
    from ..theory import linear_activity_hessian

    def one(p):
        g = pc_grads(p, infer(p, x, y, act="linear", steps=steps, dt=dt, check=False).activities, act="linear")
        exact = jax.grad(equilibrated_energy)(p, x, y)
        ratio = jnp.stack([jnp.linalg.norm(a["W"]) / jnp.linalg.norm(b["W"]) for a, b in zip(g, exact)])
        sq = jnp.stack([jnp.sum(a["W"] ** 2) for a in g])
        norms = jnp.stack([jnp.linalg.norm(a["W"]) for a in p])
        return ratio, dt * jnp.linalg.eigvalsh(linear_activity_hessian(p))[-1], sq[-1] / jnp.sum(sq), norms

    ratio, edge, share, norms = jax.jit(jax.vmap(jax.vmap(one)))(last)
    return {"grad_ratio": np.asarray(ratio), "dt_lambda_max": np.asarray(edge), "top_share": np.asarray(share),
            "norms": np.asarray(norms)}


def draw_escape(result: dict, fig: Any) -> None:
    """L (solid) and PC's F* (dashed) against iterations for every depth of the linear sweep, first step length."""
    from ..plotting import COLORS

    sweep, depths = result["sweep"], result["depths"]
    axes = fig.subplots(1, len(depths), sharey=True, squeeze=False)[0]
    it = np.maximum(sweep["grid"], 1)
    for ax, (d, H) in zip(axes, enumerate(depths)):
        for m in ("pc", "bp"):
            for s in range(sweep[m]["L"].shape[2]):
                lab = s == 0
                ax.plot(it, sweep[m]["L"][d, 0, s], color=COLORS[m], label=f"{m.upper()}: L" if lab else None)
                if m == "pc":
                    ax.plot(it, sweep[m]["F"][d, 0, s], "--", color=COLORS[m], label="PC: F*" if lab else None)
        for key, run in result["euler"].items():
            if key == f"linear-{H}":
                for s, l in enumerate(run["pc"]["L"][0]):
                    ax.plot(np.maximum(run["pc"]["grid"], 1), l, ":", color="0.3",
                            label="PC, 50 Euler steps: L" if s == 0 else None)
        ax.set(xscale="log", title=f"$n_h$ = {H}", xlabel="iteration")
    axes[0].set_ylabel("value on the evaluation set")
    axes[0].legend(fontsize=6)


@register("ch05_escape_depth", chapter="ch05", title="Escape from near the origin across depth, PC vs BP at matched "
          "step length (Fig. 5)", draw=draw_escape,
          summarize=reports.escape_depth)
def escape_across_depth(size: str = "chapter") -> dict:
    r"""Bias-free MLPs from weights of std $5\cdot10^{-3}$ (next to the saddle at the origin), three seeds, minibatches
    of 64, at matched step length (normalised SGD) for each step length in the size's ``lrs``:

    - ``"sweep"``: linear nets of every depth in ``depths``, PC at converged inference (descent on $\mathcal F^*$)
      against BP, one program (:func:`linear_depth_sweep`);
    - ``"euler"``: for each activation and depth in ``euler``, PC with 50 inference steps of $\mathrm dt = 0.1$
      (truncated inference, :func:`matched_escape`), with BP for the nonlinear nets, and for linear nets the
      :func:`truncation_diagnosis` at the end;
    - ``"sgd"``: the paper's protocol, plain SGD at one learning rate ``sgd_lr``, PC (50 Euler steps) and BP,
      for each activation and depth in ``sgd``.

    Escape times are the first iteration with $\mathcal L$ (or $\mathcal F^*$) below ``frac`` of its start on the
    evaluation set, ``iters`` where never."""
    s = ESCAPE[check_size(size)]
    with jax.enable_x64(s["data"] == "toy"):
        x, y, ev = escape_data(size)
        sweep = linear_depth_sweep(x, y, width=s["width"], depths=s["depths"], lrs=s["lrs"], iters=s["iters"],
                                   eval_xy=ev, frac=s["frac"])
        euler, sgd = {}, {}
        for act, depths in s["euler"].items():
            for H in depths:
                widths = [x.shape[1]] + [s["width"]] * H + [y.shape[1]]
                opts = dict(widths=widths, act=act, iters=s["euler_iters"], eval_xy=ev, frac=s["frac"])
                methods = ("pc",) if act == "linear" else ("pc", "bp")
                euler[f"{act}-{H}"] = {m: matched_escape(x, y, method=m, lrs=s["lrs"], **opts) for m in methods}
                if act == "linear":
                    euler[f"{act}-{H}"]["diagnosis"] = truncation_diagnosis(euler[f"{act}-{H}"]["pc"]["last"], *ev)
        for act, depths in s["sgd"].items():
            for H in depths:
                widths = [x.shape[1]] + [s["width"]] * H + [y.shape[1]]
                opts = dict(widths=widths, act=act, iters=s["euler_iters"], eval_xy=ev, frac=s["frac"])
                sgd[f"{act}-{H}"] = {m: matched_escape(x, y, method=m, lrs=(s["sgd_lr"],), matched=False, **opts)
                                     for m in ("pc", "bp")}
    for runs in (euler, sgd):  # the final weights stay out of the report
        for run in runs.values():
            for m in ("pc", "bp"):
                if m in run:
                    run[m] = {k: v for k, v in run[m].items() if k != "last"} | {"last": None}
    for m in ("pc", "bp"):
        sweep[m]["last"] = None
    return {"size": size, "depths": list(s["depths"]), "width": s["width"], "lrs": list(s["lrs"]),
            "iters": s["iters"], "euler_iters": s["euler_iters"], "frac": s["frac"], "samples": int(x.shape[0]),
            "sweep": sweep, "euler": euler, "sgd": sgd}


# --- Fig. 1: the equilibrated energy against converged inference along training -----------------------

FIG1 = {  # size: (data sets, width, Adam rate, epochs, checkpoint every k iterations, hidden-layer counts)
    "smoke": (("toy-small",), 4, 1e-2, 1, 1, (2, 3)),
    "chapter": (("gaussian",), 16, 1e-2, 3, 6, (2, 5, 10)),
    "medium": (("mnist5k",), 128, 1e-3, 1, 10, (2, 5, 10)),  # the paper's 300 took over 5 min for n_h = 10 alone on 2 cores
    "paper": (("mnist", "fashion_mnist", "cifar10"), 300, 1e-3, 1, 100, (2, 5, 10)),
}


def _fig1_data(name: str) -> Any:
    if name == "toy-small":
        return data.gaussian(n=128, d_in=6, d_out=3, seed=0)
    if name == "gaussian":
        return data.gaussian(n=512, d_in=10, d_out=5, seed=0)  # the chapter's toy data
    return data.get(name)


def energy_curve(ds: Any, n_hidden: int, *, width: int, lr: float, epochs: int, every: int, seed: int = 0,
                 tol: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    r"""Train a bias-free linear net of ``n_hidden`` hidden layers of ``width`` with PC (Adam at ``lr``, batch 64,
    ``epochs`` passes; :func:`pclib.train`). Returns the closed-form $\mathcal F^*$ on 64 held-out samples after
    every iteration, and rows (iteration, closed-form $\mathcal F^*$, energy after inference) every ``every``-th
    iteration, the inference run by :func:`pclib.infer` with the step $2/(\lambda_{\min} + \lambda_{\max})$ of the
    activity Hessian and enough steps for the contraction $\big((\lambda_{\max} - \lambda_{\min})/(\lambda_{\max} +
    \lambda_{\min})\big)^k$ of the distance to $z^*$ to reach ``tol``. All checkpoints' inference in one program."""
    import optax as _optax

    from ..energy import energy
    from ..learning import train
    from ..theory import linear_activity_hessian

    x, y = jnp.asarray(ds.x_train, jnp.float64), jnp.asarray(ds.y_train, jnp.float64)
    xb, yb = jnp.asarray(ds.x_test[:64], jnp.float64), jnp.asarray(ds.y_test[:64], jnp.float64)
    params = init_mlp(jax.random.key(seed), [x.shape[1]] + [width] * n_hidden + [y.shape[1]], bias=False)
    snaps, curve = [(0, params)], [float(equilibrated_energy(params, xb, yb))]

    def record(it, p):
        curve.append(float(equilibrated_energy(p, xb, yb)))
        if (it + 1) % every == 0:
            snaps.append((it + 1, p))

    train(params, x, y, method="pc", optimizer=_optax.adam(lr), epochs=epochs, batch_size=64, act="linear",
          progress=False, callback=record)
    lams = [np.linalg.eigvalsh(np.asarray(linear_activity_hessian(p))) for _, p in snaps]
    steps = max(int(np.ceil(np.log(tol) / np.log((lam[-1] - lam[0]) / (lam[-1] + lam[0])))) for lam in lams)
    F_inf = jax.jit(jax.vmap(lambda p, dt: energy(
        p, infer(p, xb, yb, act="linear", steps=steps, dt=dt, check=False).activities, act="linear")))(
        _stack([p for _, p in snaps]), jnp.asarray([2.0 / (lam[0] + lam[-1]) for lam in lams]))
    rows = [(it, float(equilibrated_energy(p, xb, yb)), float(f)) for (it, p), f in zip(snaps, F_inf)]
    return np.array(curve), np.array(rows)


def draw_fig1(result: dict, fig: Any) -> None:
    """The closed-form F* along training (lines) and the energy after converged inference (circles)."""
    names = list(result["runs"])
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    colors = dict(zip(result["depths"], ("tab:blue", "tab:purple", "tab:red", "tab:green")))
    for ax, name in zip(axes, names):
        for H, run in result["runs"][name].items():
            ax.plot(run["curve"], color=colors[H], label=f"theory, $n_h$ = {H}")
            ax.plot(run["rows"][:, 0], run["rows"][:, 2], "o", color=colors[H], mfc="none", ms=6,
                    label="inference" if H == result["depths"][-1] else None)
        ax.set(xlabel="training iteration", ylabel="energy at equilibrium", title=name)
    axes[0].legend(fontsize=8)


@register("ch05_energy_along_training", chapter="ch05", title="Closed-form equilibrated energy vs converged "
          "inference along PC training (Fig. 1)", draw=draw_fig1,
          summarize=reports.energy_along_training)
def energy_along_training(size: str = "chapter") -> dict:
    r""":func:`energy_curve` for every data set and hidden-layer count of the size (float64). ``gap`` is the
    largest $|\mathcal F^*_{\rm theory} - \mathcal F_{\rm inference}| / \mathcal F^*_{\rm theory}$ over all checkpoints."""
    names, width, lr, epochs, every, depths = FIG1[check_size(size)]
    with jax.enable_x64(True):
        runs = {}
        for name in names:
            ds = _fig1_data(name)
            runs[name] = {}
            for H in depths:
                curve, rows = energy_curve(ds, H, width=width, lr=lr, epochs=epochs, every=every)
                runs[name][H] = {"curve": curve, "rows": rows}
    gap = max(np.max(np.abs(r["rows"][:, 1] - r["rows"][:, 2]) / r["rows"][:, 1]) for v in runs.values() for r in v.values())
    return {"size": size, "width": width, "depths": list(depths), "runs": runs, "gap": float(gap)}


# --- Figs. 3-4: the Hessians at the origin on MNIST ----------------------------------------------------

PAPER_NETS = {1: [784, 10, 10], 2: [784, 10, 10, 10], 4: [784, 5, 5, 5, 5, 10]}  # the paper's widths
SPECTRA = {  # size: (data set, digits, nets, random probe vectors, digits for dense Hessians, largest net made dense)
    "smoke": ("mnist5k", 64, {1: [784, 2, 10], 2: [784, 2, 2, 10]}, 1, 64, None),
    "chapter": ("mnist5k", 1000, PAPER_NETS, 3, 0, 0),
    "medium": ("mnist5k", 4000, PAPER_NETS, 3, 1000, 5000),  # dense: the 4,045 weights of n_h = 4 (~1 min)
    "paper": ("mnist", None, PAPER_NETS, 3, 60000, None),
}


def mnist_origin(name: str, digits: int | None) -> tuple[Any, Any]:
    """The first ``digits`` training digits (all if ``None``), normalised as the paper did, one-hot targets, float64."""
    ds = data.get(name)
    end = ds.x_train.shape[0] if digits is None else digits
    return (jnp.asarray((ds.x_train[:end] - 0.1307) / 0.3081, jnp.float64), jnp.asarray(ds.y_train[:end], jnp.float64))


def draw_spectra(result: dict, fig: Any) -> None:
    """Histograms of the theorem's spectra of L and F* at the origin, with Lanczos's smallest eigenvalue of F*."""
    from ..plotting import COLORS

    nets = result["nets"]
    axes = fig.subplots(1, len(nets), sharey=True, squeeze=False)[0]
    for ax, (H, r) in zip(axes, nets.items()):
        tL, tF = np.asarray(r["theorem_L"]), np.asarray(r["theorem_F"])
        bins = np.linspace(min(tF.min(), tL.min()) - 0.02, max(tF.max(), tL.max()) + 0.02, 40)
        ax.hist(tL, bins=bins, color=COLORS["bp"], alpha=0.6, label=r"$\mathcal{L}$")
        ax.hist(tF, bins=bins, color=COLORS["pc"], alpha=0.6, label=r"$\mathcal{F}^*$")
        ax.plot([r["lanczos_F"]], [1], "v", color=COLORS["theory"], ms=8, label=r"$\lambda_{\min}(\mathcal{F}^*)$, Lanczos")
        ax.set(yscale="log", xlabel="eigenvalue", title=f"MNIST, $n_h$ = {H}, width {r['widths'][1]}")
    axes[0].set_ylabel("count")
    axes[0].legend(fontsize=8)


@register("ch05_origin_spectra", chapter="ch05", title="Hessians of L and F* at the origin on MNIST at the paper's "
          "widths (Figs. 3-4)", draw=draw_spectra,
          summarize=reports.origin_spectra)
def origin_spectra(size: str = "chapter") -> dict:
    r"""Theorem 2 on MNIST digits at the paper's widths (10, 10 and 5 for one, two and four hidden layers), float64.

    For each net: ``probe_gap``, the largest $\lVert(\nabla^2 f(0) - H_{\rm theorem})v\rVert / \lVert v\rVert$ over random
    $v$ for $f = \mathcal L, \mathcal F^*$ (autodiff Hessian-vector products against :func:`pclib.theory.origin_hvp`);
    ``theorem_L``, ``theorem_F``: the theorem's spectra (:func:`pclib.theory.origin_spectra`); ``lanczos_F``: the
    smallest eigenvalue of $\nabla^2\mathcal F^*(0)$ by Lanczos; ``Syy_max``: $\lambda_{\max}(\Sigma_{yy})$; and where the size
    has dense digits (and the net at most its largest number of weights, ``None``: any), ``dense_gap``: the largest
    |eigenvalue of the dense autodiff Hessian - theorem| on those digits."""
    from .. import landscape, theory
    from ..energy import mse_loss as _mse

    name, digits, nets, probes, dense, dense_max = SPECTRA[check_size(size)]
    mse = lambda p, x, y: _mse(p, x, y, act="linear")  # noqa: E731
    out = {}
    with jax.enable_x64(True):
        x, y = mnist_origin(name, digits)
        for H, widths in nets.items():
            origin = [{"W": jnp.zeros((b, a), jnp.float64)} for a, b in zip(widths[:-1], widths[1:])]
            theorem = theory.origin_hvp(widths, x, y)
            hv = [landscape.hvp(fn, origin, x, y) for fn in (mse, equilibrated_energy)]
            n_weights = sum(a * b for a, b in zip(widths[:-1], widths[1:]))
            gap = 0.0
            for v in np.random.default_rng(H).standard_normal((probes, n_weights)):
                for h, t in zip(hv, theorem(v)):  # L, then F*
                    gap = max(gap, float(np.linalg.norm(np.asarray(h(v)) - t) / np.linalg.norm(v)))
            tL, tF = theory.origin_spectra(widths, x, y)
            lam = landscape.extreme_eigenvalues(equilibrated_energy, origin, x, y, k=1, which="SA")[0]
            r = {"widths": widths, "weights": n_weights, "probe_gap": gap, "theorem_L": tL, "theorem_F": tF,
                 "lanczos_F": float(lam), "Syy_max": float(np.linalg.eigvalsh(np.asarray(y.T @ y) / len(y))[-1])}
            if dense and (dense_max is None or n_weights <= dense_max):
                xd, yd = x[:dense], y[:dense]
                dense_h = landscape.hessians((mse, equilibrated_energy), origin, xd, yd)
                eL, eF = (np.linalg.eigvalsh(np.asarray(h)) for h in dense_h)
                dL, dF = theory.origin_spectra(widths, xd, yd)
                r["dense_gap"] = float(max(np.abs(eL - dL).max(), np.abs(eF - dF).max()))
            out[H] = r
    return {"size": size, "digits": int(x.shape[0]), "dense_digits": int(min(dense, x.shape[0])), "nets": out}
