r"""A fair comparison of PC and backprop training: same initialisations, same minibatches, several
seeds, and each method at its own best learning rate.

At initialisation PC's weight gradient is several times shorter than backprop's (Chapter 4: near the
valleys $\nabla\mathcal F^* \approx \nabla\mathcal L / (1 + w_2^2)$ in the toy chain, and in deep
nets the bottom layers receive far less). So at one shared learning rate PC simply takes shorter
steps, and "PC tolerates larger rates" or "PC is slower" may say no more than that. :func:`compare`
removes this in two ways:

* ``mode="tuned"``: plain updates $\theta \leftarrow \theta - \eta\, g$ (or any optax optimiser),
  each method at the rate $\eta$ of the grid that trains it best;
* ``mode="matched"``: normalised updates $\theta \leftarrow \theta - \eta\, g / \lVert g\rVert$
  (the global norm over all parameters), so both methods take steps of the same length $\eta$ and
  differ only in direction; again each at its own best $\eta$.

It also reports what "PC" meant: the ratio $\lVert\nabla_{\rm BP}\rVert / \lVert\nabla_{\rm PC}\rVert$
per layer at initialisation, and how far PC's gradient after $T$ inference steps of size
$\mathrm dt$ lies from the gradient at the inference equilibrium,
$\lVert g_T - g^*\rVert / \lVert g^*\rVert$, with the inference residual
$\lVert\nabla_z F(z_T)\rVert / \lVert\nabla_z F(z_0)\rVert$ (the fraction of the activity gradient
left after inference, from the feedforward pass $z_0$).
"""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache, partial
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .energy import _mse_loss, _sample_layer_energies, as_precisions
from .equilibria import euler_dt
from .escape import normalize_updates
from .inference import METHODS as METHODS_INFER
from .inference import infer
from .mupc import euler_dt as mupc_euler_dt
from .learning import _bp_grads, _pc_grads, minibatch_stream, run_score
from .model import Activation, Array, Params, check_data, check_param, check_params

MODES = ("tuned", "matched")
SELECT = ("mean", "per_seed")


class DivergedEverywhereError(ValueError):
    """A method diverged at every rate of the grid for some seed: the grid needs smaller rates."""


@dataclasses.dataclass(frozen=True)
class Comparison:
    r"""Result of :func:`compare`; arrays are NumPy, axis 0 of the per-method ones is ``methods``.

    Attributes
    ----------
    methods : ``("pc", "bp")``.
    mode, select, score : the options used.
    seeds : ``(S,)`` initialisation seeds.
    lrs : ``(K,)`` the learning-rate (``tuned``) or step-length (``matched``) grid.
    best_lr : ``(2, S)`` the rate each method trained at, per seed (equal across seeds with ``select="mean"``).
    scores : ``(2, S, K)`` :func:`pclib.learning.run_score` of every run; ``inf`` where it diverged.
    losses : ``(2, S, iterations)`` batch loss before each update, at the chosen rate.
    grid_losses : ``(2, S, K, iterations)`` the same at every rate (NaN/inf where it diverged).
    step_lengths : ``(2, S, iterations)`` global norm of each update at the chosen rate.
    test_loss, test_accuracy : ``(2, S)`` after training at the chosen rate, or ``None`` without
        ``eval`` data (accuracy compares arg-maxes, so it is NaN for a single output).
    grad_ratio : ``(S,)`` $\lVert g_{\rm BP}\rVert / \lVert g_{\rm PC}\rVert$ at initialisation, on the first minibatch.
    grad_ratio_layers : ``(S, L)`` the same per layer (weights and bias together), input to output;
        ``inf`` for a layer that PC's $T$ inference steps leave with a zero gradient.
    equilibrium_gap : ``(S,)`` $\lVert g_T - g^*\rVert / \lVert g^*\rVert$ at initialisation.
    residual : ``(S,)`` the activity gradient PC's inference left at initialisation, as a fraction of the
        feedforward pass's: $\lVert\nabla_z F(z_T)\rVert / \lVert\nabla_z F(z_0)\rVert$.
    train_residual : ``(S,)`` the largest inference residual over all of PC's updates at its chosen rate:
        how far from equilibrium the gradients PC trained with were.
    equilibrium_residual : ``(S,)`` the residual of the equilibrium $g^*$ was taken at.
    equilibrium_tol : the residual below which that point counts as an equilibrium; where it is not met
        (ReLU, whose energy gradient jumps at the kinks), :meth:`summary` says so, and ``equilibrium_gap``
        is the distance to the best point found, not to an equilibrium.
    steps, dt : PC's inference steps $T$ (with ``tol``, the cap) and step size.
    solver, tol : PC's inference method and stopping tolerance (``None``: exactly $T$ steps).
    """

    methods: tuple
    mode: str
    select: str
    score: str
    seeds: np.ndarray
    lrs: np.ndarray
    best_lr: np.ndarray
    scores: np.ndarray
    losses: np.ndarray
    grid_losses: np.ndarray
    step_lengths: np.ndarray
    test_loss: np.ndarray | None
    test_accuracy: np.ndarray | None
    grad_ratio: np.ndarray
    grad_ratio_layers: np.ndarray
    equilibrium_gap: np.ndarray
    residual: np.ndarray
    equilibrium_residual: np.ndarray
    steps: int
    dt: float
    equilibrium_tol: float = 1e-8
    train_residual: np.ndarray | None = None
    solver: str = "euler"
    tol: float | None = None

    def band(self, method: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Mean, min and max over seeds of ``method``'s loss curve at its chosen rate (for a plot)."""
        c = self.losses[self.methods.index(method)]
        return c.mean(axis=0), c.min(axis=0), c.max(axis=0)

    def summary(self) -> str:
        """A few lines a chapter can print: rates, losses, test metrics and what PC's gradient was,
        as mean [min, max] over seeds with two significant digits."""
        g = lambda v: f"{float(v):.2g}"  # noqa: E731
        band = lambda a: f"{g(np.mean(a))} [{g(np.min(a))}, {g(np.max(a))}]"  # noqa: E731
        q = max(1, self.losses.shape[-1] // 10)
        rate = "step length" if self.mode == "matched" else "learning rate"
        how = "best mean score over seeds" if self.select == "mean" else "best per seed"
        lines = [f"PC vs BP over {len(self.seeds)} seeds, {self.mode} {rate}s ({how}; grid "
                 f"{', '.join(g(v) for v in self.lrs)})"]
        for i, m in enumerate(self.methods):
            lr = self.best_lr[i]
            lr_text = g(lr[0]) if np.all(lr == lr[0]) else "/".join(g(v) for v in lr)
            text = (f"  {m.upper()}: {rate} {lr_text}; loss first 10% {band(self.losses[i, :, :q].mean(1))}, "
                    f"last 10% {band(self.losses[i, :, -q:].mean(1))}")
            if self.test_loss is not None:
                text += f"; test loss {band(self.test_loss[i])}"
                if np.all(np.isfinite(self.test_accuracy[i])):
                    text += f", accuracy {band(self.test_accuracy[i])}"
            lines.append(text)
        layers = ", ".join(g(v) for v in np.mean(self.grad_ratio_layers, axis=0))
        lines.append(f"  |BP gradient| / |PC gradient| at init: {band(self.grad_ratio)}; "
                     f"per layer, input to output (mean): {layers}")
        reached = bool(np.all(self.equilibrium_residual <= self.equilibrium_tol))
        reference = "at equilibrium" if reached else "at the most settled point found (NOT an equilibrium)"
        if self.tol is None:
            how_pc = f"{self.steps} {self.solver} inference steps" + (f" of dt = {g(self.dt)}" if self.solver == "euler" else "")
        else:
            how_pc = f"{self.solver} inference to max|dF/dz| < {g(self.tol)}, at most {self.steps} iterations"
        if self.train_residual is not None:
            lines.append(f"  PC's inference during training ({how_pc}): largest residual over the updates "
                         f"{band(self.train_residual)}")
        lines.append(f"  PC's gradient at init ({how_pc}) vs {reference}: "
                     f"relative distance {band(self.equilibrium_gap)}, residual / feedforward residual {band(self.residual)} "
                     f"(reference residual <= {g(np.max(self.equilibrium_residual))}, "
                     f"{'below' if reached else 'above'} the tolerance {g(self.equilibrium_tol)})")
        return "\n".join(lines)


def _global_norm(tree: Any) -> Array:
    return jnp.sqrt(sum(jnp.sum(a**2) for a in jax.tree_util.tree_leaves(tree)))


def _optimizer(optimizer: Callable[[Any], optax.GradientTransformation], lr: Any, matched: Any):
    r"""``optimizer(lr)``, behind the normalisation $g \mapsto g/\lVert g\rVert$ (:func:`pclib.escape.normalize_updates`)
    where ``matched`` (a traced flag, so that both modes run one compiled program) is true."""
    return optax.chain(normalize_updates(matched), optimizer(lr))


@lru_cache(maxsize=32)
def _runner(method: str, optimizer: Callable, *, act: Activation, out_act: Activation, steps: int, dt: float,
            solver: str, tol: float | None, param: str = "standard") -> Callable:
    """One compiled function that trains every (seed, rate) pair at once (vmapped over a stacked
    ``params0``, the rates and each pair's minibatch rows ``idx``, so ``x[idx[t]]`` is update $t$'s batch);
    returns (final params, losses, update lengths, diverged flags, the largest inference residual over
    the updates), each with a leading pair axis. The mode (``matched``) and the precisions are arguments,
    and the function is cached, so later calls with the same options compile nothing new."""

    def run_one(params0, lr, matched, precisions, x, y, idx):
        opt = _optimizer(optimizer, lr, matched)

        def body(carry, rows):
            p, state, bad, worst = carry
            xb, yb = x[rows], y[rows]
            loss = _mse_loss(p, xb, yb, act=act, out_act=out_act, param=param)
            if method == "bp":
                g = _bp_grads(p, xb, yb, act=act, out_act=out_act, param=param)
            else:
                pi = as_precisions(precisions, len(p), xb.dtype)
                res = infer(p, xb, yb, act=act, out_act=out_act, steps=steps, dt=dt, precisions=pi, check=False,
                            method=solver, tol=tol, param=param)
                e = res.energies
                bad = bad | ~jnp.all(jnp.isfinite(e)) | (jnp.max(e) > 2.0 * e[0] + 1e-8)
                worst = jnp.maximum(worst, res.residual.astype(worst.dtype))
                g = _pc_grads(p, res.activities, pi, act=act, out_act=out_act, param=param)
            updates, state = opt.update(g, state, p)
            return (optax.apply_updates(p, updates), state, bad, worst), (loss, _global_norm(updates))

        start = (params0, opt.init(params0), jnp.array(False), jnp.zeros((), jnp.result_type(x, params0[0]["W"])))
        (p, _, bad, worst), (losses, lengths) = jax.lax.scan(body, start, idx)
        bad = bad | ~jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in jax.tree_util.tree_leaves(p)]))
        return p, losses, lengths, bad, worst

    return jax.jit(jax.vmap(run_one, in_axes=(0, 0, None, None, None, None, 0)))


def _equilibrium(params, x, y, *, act, out_act, precisions, init="ffwd", tol=1e-8, chunk=250, max_steps=40_000,
                 param="standard"):
    r"""PC's inference equilibrium (both ends clamped), returning (activities, residual) with the
    residual relative to the feedforward pass's (see :func:`_residual`).

    First line-search Newton–CG (:func:`pclib.infer` with ``method="newton"``) to the absolute
    tolerance ``tol`` times the largest activity gradient at the start. Where that is not enough
    (ReLU, whose gradient jumps at the kinks, or float32 round-off), Euler continues in chunks of
    ``chunk`` steps from there: the step starts at
    $\mathrm dt = 0.5 / \max_l(\pi_l + \pi_{l+1}\lVert W_{l+1}\rVert_2^2)$; a chunk that lowers the
    energy is kept and the step grows by half, one that raises it is undone and the step halves. It
    stops when the residual is below ``tol``, when four kept chunks in a row fail to halve the best
    residual (the floor of the float type, or ReLU's kinks), or after ``max_steps``. With ``param="mupc"`` the
    step starts at :func:`pclib.mupc.euler_dt`.
    """
    pi = np.asarray(as_precisions(precisions, len(params), params[0]["W"].dtype), np.float64)
    if len(params) == 1:  # no hidden layer: the clamped activities are the equilibrium
        return infer(params, x, y, act=act, out_act=out_act, steps=0, param=param).activities, 0.0
    opts = dict(act=act, out_act=out_act, precisions=jnp.asarray(pi, params[0]["W"].dtype), param=param)
    start = infer(params, x, y, steps=0, init=init, **opts)
    scale = float(start.residual)
    zs = start.activities
    if scale > 0:
        newton = infer(params, x, y, init=zs, tol=tol * scale, max_steps=50, method="newton", check=False, **opts)
        e = np.asarray(newton.energies)
        if np.all(np.isfinite(e)) and e[-1] <= e[0]:
            zs = newton.activities
    res = best = float(_residual(params, zs, **opts))
    dt = euler_dt(params, pi) if param == "standard" else mupc_euler_dt(params, pi)
    done, stalls = 0, 0
    while done < max_steps and stalls < 4 and res > tol:
        run = infer(params, x, y, steps=chunk, dt=dt, init=zs, check=False, **opts)
        done += chunk
        e = np.asarray(run.energies)
        if not np.all(np.isfinite(e)) or e[-1] > e[0] or e.max() > 2 * e[0]:
            dt /= 2
            continue
        zs, dt = run.activities, dt * 1.5
        res = float(_residual(params, zs, **opts))
        stalls = 0 if res < 0.5 * best else stalls + 1
        best = min(best, res)
    return zs, res


def _activity_gradient_norm(params, zs, *, act, out_act, precisions, param="standard"):
    def total(hidden):
        return jnp.sum(_sample_layer_energies(params, [zs[0], *hidden, zs[-1]], act=act, out_act=out_act,
                                              precisions=precisions, param=param))
    return _global_norm(jax.grad(total)(list(zs[1:-1])))


@partial(jax.jit, static_argnames=("act", "out_act", "param"))
def _residual(params, zs, *, act, out_act, precisions, param="standard"):
    r"""$\lVert\nabla_z F(z)\rVert / \lVert\nabla_z F(z_0)\rVert$ over the hidden layers, $z_0$ the feedforward pass."""
    from .model import forward

    if len(params) == 1:
        return jnp.zeros((), zs[0].dtype)
    z0 = forward(params, zs[0], act=act, out_act=out_act, param=param)
    z0[-1] = zs[-1]
    num = _activity_gradient_norm(params, zs, act=act, out_act=out_act, precisions=precisions, param=param)
    den = _activity_gradient_norm(params, z0, act=act, out_act=out_act, precisions=precisions, param=param)
    return num / den


def _layer_norms(g: Params) -> np.ndarray:
    return np.array([float(_global_norm(layer)) for layer in g])


def compare(
    init: Callable[[Array], Params] | Sequence[Params],
    x: Array,
    y: Array,
    *,
    lrs: Sequence[float],
    seeds: Sequence[int] = (0, 1, 2),
    mode: str = "tuned",
    select: str = "mean",
    score: str = "mean",
    optimizer: Callable[[Any], optax.GradientTransformation] = optax.sgd,
    act: Activation = "tanh",
    out_act: Activation = "linear",
    steps: int = 20,
    dt: float = 0.1,
    precisions: Any = None,
    epochs: int = 1,
    batch_size: int = 64,
    batch_seed: int | None = None,
    eval: tuple[Array, Array] | None = None,
    equilibrium_tol: float | None = None,
    solver: str = "euler",
    tol: float | None = None,
    param: str = "standard",
) -> Comparison:
    r"""Train PC and BP from the same initialisations on the same minibatches, each at its own best rate.

    For every seed $s$ both methods start from ``init(jax.random.key(s))`` and see the same shuffled
    minibatches (order set by ``batch_seed``, or by $s$ when it is ``None``), for ``epochs`` passes.
    PC runs ``steps`` Euler inference steps of size ``dt`` from the feedforward pass per update
    (as :func:`pclib.train`), or with ``tol`` runs inference to that residual (``solver="newton"``
    makes that affordable), so that it trains at equilibrium; BP uses the backprop gradient. Every rate in ``lrs`` is trained (one
    compiled, vectorised run per method and seed) and scored by :func:`pclib.learning.run_score`
    (``score``: ``"mean"`` area under the loss curve, or ``"final"``), the rule of
    :func:`pclib.learning.lr_grid_search`; diverged runs score ``inf``.

    Parameters
    ----------
    init : ``init(key) -> params``, e.g. ``lambda k: pclib.init_mlp(k, widths)``, called with
        ``jax.random.key(s)`` for each seed; or a list of initial params, one per seed.
    x, y : training inputs ``(N, d_0)`` and targets ``(N, d_L)``.
    lrs : the grid of learning rates (``mode="tuned"``) or of step lengths (``mode="matched"``).
    seeds : initialisation seeds (at least 3 for a spread).
    mode : ``"tuned"``, updates from ``optimizer(lr)`` applied to the raw gradients $g$; or
        ``"matched"``, ``optimizer(lr)`` applied to $g / \lVert g\rVert$, so with SGD every update has
        length exactly ``lr`` for both methods.
    select : ``"mean"``, one rate per method, the lowest mean score over seeds (a rate that diverges for
        any seed is out); or ``"per_seed"``, each seed's own best rate.
    optimizer : ``optimizer(lr) -> optax.GradientTransformation`` (default SGD); it is called with a
        traced rate inside the compiled run.
    act, out_act, precisions : the network's activations and PC's precisions.
    steps, dt : PC's inference steps $T$ and step size.
    eval : ``(x_test, y_test)`` to report test loss and accuracy after training.
    equilibrium_tol : residual, relative to the feedforward pass's, below which inference counts as at
        equilibrium for the gradient gap; ``None``: $10^{-8}$ in float64, $10^{-5}$ in float32 (a few
        hundred times its rounding error).
    solver : PC's inference method, ``"euler"`` or ``"newton"`` (see :func:`pclib.infer`).
    tol : PC's inference tolerance for every update (``steps`` is then the cap), or ``None`` for
        exactly ``steps`` steps. The largest residual reached is reported as ``train_residual``.
    param : the network's parameterisation, ``"standard"`` or ``"mupc"`` (:func:`pclib.model.mupc_predictors`),
        for both methods (BP then trains the same scaled residual network).

    Returns
    -------
    :class:`Comparison`, whose ``summary()`` prints the essentials.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: use 'tuned' (own best learning rate) or 'matched' (normalised steps)")
    if select not in SELECT:
        raise ValueError(f"unknown select {select!r}: use 'mean' (one rate over seeds) or 'per_seed'")
    lr_grid = np.asarray([float(v) for v in lrs], np.float64)
    if lr_grid.size == 0 or lr_grid.min() <= 0:
        raise ValueError(f"lrs must be a non-empty list of positive rates, e.g. [1e-3, 1e-2, 1e-1]; got {list(lrs)}")
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds must list at least one seed (3 or more for a spread)")
    starts = [init(jax.random.key(s)) for s in seeds] if callable(init) else list(init)
    if len(starts) != len(seeds):
        raise ValueError(f"init lists {len(starts)} initial params but there are {len(seeds)} seeds; give one per seed")
    x, y = jnp.asarray(x), jnp.asarray(y)
    if equilibrium_tol is None:
        equilibrium_tol = 1e-8 if jnp.finfo(starts[0][0]["W"].dtype).bits >= 64 else 1e-5
    methods = ("pc", "bp")
    check_param(param, starts[0])
    opts = dict(act=act, out_act=out_act, param=param)
    if solver not in METHODS_INFER:
        raise ValueError(f"unknown solver {solver!r}: use 'euler' (the paper's dynamics) or 'newton' (to a tolerance, fast)")
    if tol is not None and not float(tol) > 0:
        raise ValueError(f"tol must be positive (the largest activity gradient to accept), or None; got {tol!r}")
    pc_only = dict(steps=int(steps), dt=float(dt), solver=solver, tol=None if tol is None else float(tol))
    bp_same = dict(steps=0, dt=0.0, solver="euler", tol=None)  # BP's run ignores PC's options
    try:
        runners = {m: _runner(m, optimizer, **(pc_only if m == "pc" else bp_same), **opts) for m in methods}
    except TypeError:  # an unhashable optimizer factory or activation: compile for this call only
        runners = {m: _runner.__wrapped__(m, optimizer, **(pc_only if m == "pc" else bp_same), **opts) for m in methods}
    K, S = lr_grid.size, len(seeds)
    final, losses, lengths, bad, worst = {}, {}, {}, {}, {}
    diag = {k: [] for k in ("ratio", "layers", "gap", "residual", "eq_residual")}
    orders = []
    for j, s in enumerate(seeds):
        check_params(starts[j])
        check_data(starts[j], x, y)
        if jax.tree_util.tree_map(jnp.shape, starts[j]) != jax.tree_util.tree_map(jnp.shape, starts[0]):
            raise ValueError(f"the initial params of seed {s} differ in shape from those of seed {seeds[0]}: "
                             f"every seed must start the same network")
        stream, n = minibatch_stream(np.arange(x.shape[0]), np.arange(x.shape[0]), epochs=epochs,
                                     batch_size=batch_size, seed=s if batch_seed is None else batch_seed)
        orders.append(np.stack([rows for rows, _ in stream]))
    # every (seed, rate) pair in one vectorised, compiled run per method
    params_all = jax.tree_util.tree_map(lambda *a: jnp.stack([v for v in a for _ in range(K)]), *starts)
    lr_all = jnp.asarray(np.tile(lr_grid, S), starts[0][0]["W"].dtype)
    idx_all = jnp.asarray(np.repeat(np.stack(orders), K, axis=0))

    def diagnostics() -> list[dict]:
        return [_diagnostics(starts[j], x[jnp.asarray(orders[j][0])], y[jnp.asarray(orders[j][0])], steps=int(steps),
                             dt=float(dt), precisions=precisions, tol=equilibrium_tol, solver=solver,
                             inference_tol=tol, **opts) for j in range(S)]

    # PC's run, BP's run and the diagnostics are independent: three threads, so that their compilations
    # (most of the time on small networks) proceed in parallel on a multi-core CPU
    with ThreadPoolExecutor(max_workers=3) as pool:
        pi = as_precisions(precisions, len(starts[0]), starts[0][0]["W"].dtype)
        runs = {m: pool.submit(runners[m], params_all, lr_all, mode == "matched", pi, x, y, idx_all) for m in methods}
        per_seed = pool.submit(diagnostics)
        for m in methods:
            p, l, u, b, r = runs[m].result()
            for j in range(S):
                at = slice(j * K, (j + 1) * K)
                final[m, j] = jax.tree_util.tree_map(lambda a: a[at], p)
                losses[m, j], lengths[m, j], bad[m, j], worst[m, j] = (np.asarray(v[at]) for v in (l, u, b, r))
        for d in per_seed.result():
            for k in diag:
                diag[k].append(d[k])

    scores = np.array([[[run_score(losses[m, j][k], diverged=bool(bad[m, j][k]), score=score) for k in range(K)]
                        for j in range(S)] for m in methods])
    best = np.zeros((2, S), dtype=int)
    for i, m in enumerate(methods):
        if select == "mean":
            mean = scores[i].mean(axis=0)
            if not np.isfinite(mean).any():
                raise DivergedEverywhereError(f"{m.upper()} diverged at every rate in {list(lr_grid)} for some seed; try smaller rates")
            best[i] = int(np.argmin(mean))
        else:
            if not np.isfinite(scores[i]).any(axis=1).all():
                raise DivergedEverywhereError(f"{m.upper()} diverged at every rate in {list(lr_grid)} for some seed; try smaller rates")
            best[i] = np.argmin(scores[i], axis=1)
    pick = lambda arr, i, j: arr[best[i, j]]  # noqa: E731
    test_loss = test_acc = None
    if eval is not None:
        xt, yt = jnp.asarray(eval[0]), jnp.asarray(eval[1])
        test_loss, test_acc = np.zeros((2, S)), np.zeros((2, S))
        for i, m in enumerate(methods):
            for j in range(S):
                p = jax.tree_util.tree_map(lambda a: a[best[i, j]], final[m, j])
                test_loss[i, j], test_acc[i, j] = _evaluate(p, xt, yt, **opts)
    return Comparison(
        methods=methods, mode=mode, select=select, score=score, seeds=np.asarray(seeds), lrs=lr_grid,
        best_lr=lr_grid[best], scores=scores,
        losses=np.stack([[pick(losses[m, j], i, j) for j in range(S)] for i, m in enumerate(methods)]),
        grid_losses=np.stack([[losses[m, j] for j in range(S)] for m in methods]),
        step_lengths=np.stack([[pick(lengths[m, j], i, j) for j in range(S)] for i, m in enumerate(methods)]),
        test_loss=test_loss, test_accuracy=test_acc,
        grad_ratio=np.asarray(diag["ratio"]), grad_ratio_layers=np.asarray(diag["layers"]),
        equilibrium_gap=np.asarray(diag["gap"]), residual=np.asarray(diag["residual"]),
        equilibrium_residual=np.asarray(diag["eq_residual"]), steps=int(steps), dt=float(dt),
        equilibrium_tol=float(equilibrium_tol),
        train_residual=np.asarray([worst["pc", j][best[0, j]] for j in range(S)]),
        solver=solver, tol=None if tol is None else float(tol),
    )


def _evaluate(params, x, y, *, act, out_act, param="standard") -> tuple[float, float]:
    """Test loss and arg-max accuracy (NaN for a single output)."""
    loss = float(_mse_loss(params, x, y, act=act, out_act=out_act, param=param))
    if y.shape[1] < 2:
        return loss, float("nan")
    from .model import predict

    hit = jnp.argmax(predict(params, x, act=act, out_act=out_act, param=param), axis=1) == jnp.argmax(y, axis=1)
    return loss, float(jnp.mean(hit))


def _diagnostics(params, xb, yb, *, act, out_act, steps, dt, precisions, tol, solver="euler", inference_tol=None,
                 param="standard") -> dict:
    """Gradient-norm ratios and PC's distance from equilibrium at ``params``, on one minibatch."""
    from .learning import bp_grads, pc_grads

    opts = dict(act=act, out_act=out_act, param=param)
    pi = as_precisions(precisions, len(params), params[0]["W"].dtype)
    zs_T = infer(params, xb, yb, steps=steps, dt=dt, precisions=pi, check=False, method=solver, tol=inference_tol,
                 **opts).activities
    g_T = pc_grads(params, zs_T, precisions=pi, **opts)
    g_bp = bp_grads(params, xb, yb, **opts)
    zs_eq, eq_res = _equilibrium(params, xb, yb, precisions=pi, init=zs_T, tol=tol, **opts)
    g_eq = pc_grads(params, zs_eq, precisions=pi, **opts)
    diff = jax.tree_util.tree_map(lambda a, b: a - b, g_T, g_eq)
    with np.errstate(divide="ignore"):  # inf: a layer PC's T steps have not reached (zero gradient)
        layers = _layer_norms(g_bp) / _layer_norms(g_T)
    return {
        "ratio": float(_global_norm(g_bp) / _global_norm(g_T)),
        "layers": layers,
        "gap": float(_global_norm(diff) / _global_norm(g_eq)),
        "residual": float(_residual(params, zs_T, precisions=pi, **opts)),
        "eq_residual": eq_res,
    }
