r"""Learning: PC weight gradients at the inferred activities, backprop gradients, and training loops.

PC's learning rule is gradient descent on the energy with respect to the weights, at the
activities that inference settled on (Millidge et al. 2022, Eq. 2):

$$\frac{\partial \mathcal F}{\partial W_l} = -\frac1N \sum_i \pi_l
\big(\varepsilon_{l,i} \odot f_l'(W_l z_{l-1,i} + b_l)\big)\, z_{l-1,i}^\top ,$$

which is local: it needs only the error of layer $l$ and the activity of layer $l-1$.
Backprop descends $\mathcal L$ with gradients taken at the feedforward pass.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from tqdm.auto import tqdm

from .data import batches
from .energy import _check_activities, _energy, _mse_loss, as_precisions, precision_argument
from .inference import check_energies, infer
from .model import Activation, Array, Params, check_data, check_param, check_params, static_options
from .theory.util import cosine


def _pc_grads(params: Params, activities: list, precisions: Any, *, act: Activation, out_act: Activation,
              param: str = "standard") -> Params:
    """:func:`pc_grads` without the checks, for use inside compiled code."""
    return jax.grad(lambda p: _energy(p, activities, precisions, act=act, out_act=out_act, param=param))(params)


def _bp_grads(params: Params, x: Array, y: Array, *, act: Activation, out_act: Activation,
              param: str = "standard") -> Params:
    """:func:`bp_grads` without the checks, for use inside compiled code."""
    return jax.grad(lambda p: _mse_loss(p, x, y, act=act, out_act=out_act, param=param))(params)


_pc_grads_jit = jax.jit(_pc_grads, static_argnames=("act", "out_act", "param"))
_bp_grads_jit = jax.jit(_bp_grads, static_argnames=("act", "out_act", "param"))


def pc_grads(
    params: Params,
    activities: list,
    *,
    act: Activation = "tanh",
    out_act: Activation = "linear",
    precisions: Any = None,
    param: str = "standard",
) -> Params:
    r"""$\partial \mathcal F / \partial \theta$ at the given activities (same pytree as ``params``).

    Compiled once per shape and activation; the checks run before, outside the compiled code, and
    ``precisions`` is an argument (new precisions do not recompile): scalars, or matrix precisions as in
    :func:`pclib.infer`. Works under an outer ``jit``, ``vmap`` or ``grad``. ``param="mupc"``: the energy of
    the μPC predictions (:func:`pclib.model.mupc_predictors`).
    """
    check_params(params)
    check_param(param, params)
    _check_activities(params, activities)
    pi = precision_argument(precisions, params)
    fn = _pc_grads_jit if static_options(act, out_act) else _pc_grads
    return fn(params, list(activities), pi, act=act, out_act=out_act, param=param)


def bp_grads(
    params: Params, x: Array, y: Array, *, act: Activation = "tanh", out_act: Activation = "linear",
    param: str = "standard",
) -> Params:
    r"""Backprop gradients $\partial \mathcal L / \partial \theta$ of the mean squared error.

    Compiled once per shape and activation, like :func:`pc_grads`.
    """
    check_params(params)
    check_param(param, params)
    check_data(params, x, y)
    fn = _bp_grads_jit if static_options(act, out_act) else _bp_grads
    return fn(params, x, y, act=act, out_act=out_act, param=param)


class StepInfo(NamedTuple):
    """What a training step reports: the batch loss at the feedforward pass before the update,
    and (for PC) the inference energy trace of shape ``(steps + 1,)``."""

    loss: Array
    energies: Array


def make_step(
    optimizer: optax.GradientTransformation,
    *,
    method: str = "pc",
    act: Activation = "tanh",
    out_act: Activation = "linear",
    steps: int = 20,
    dt: float = 0.1,
    precisions: Any = None,
    param: str = "standard",
) -> Callable:
    """A compiled training step ``step(params, opt_state, x, y) -> (params, opt_state, StepInfo)``.

    ``method="pc"`` runs ``steps`` inference steps from the feedforward pass with the output
    clamped to ``y`` and applies the optimiser to :func:`pc_grads`; ``method="bp"`` applies it to
    :func:`bp_grads`. The step is compiled once per shape: new data of the same shape reuses it.
    ``param`` (``"standard"`` or ``"mupc"``) sets the network's predictions, for both methods.
    """
    if method not in ("pc", "bp"):
        raise ValueError(f"unknown method {method!r}: use 'pc' (predictive coding) or 'bp' (backprop)")
    check_param(param)

    def grads_and_info(params, x, y):
        loss = _mse_loss(params, x, y, act=act, out_act=out_act, param=param)
        if method == "bp":
            return _bp_grads(params, x, y, act=act, out_act=out_act, param=param), StepInfo(loss, loss[None])
        pi = as_precisions(precisions, len(params), x.dtype)
        res = infer(params, x, y, act=act, out_act=out_act, steps=steps, dt=dt, precisions=pi, check=False,
                    param=param)
        g = _pc_grads(params, res.activities, pi, act=act, out_act=out_act, param=param)
        return g, StepInfo(loss, res.energies)

    @jax.jit
    def step(params, opt_state, x, y):
        g, info = grads_and_info(params, x, y)
        updates, opt_state = optimizer.update(g, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, info

    return step


def minibatch_stream(x: Array, y: Array, *, epochs: int, batch_size: int, seed: int) -> tuple[Any, int]:
    """Shuffled minibatches for ``epochs`` passes (a fresh shuffle each epoch) and their count."""
    if not 1 <= batch_size <= x.shape[0]:
        raise ValueError(f"batch_size must be between 1 and the number of samples {x.shape[0]}; got {batch_size}")
    n_batches = epochs * (x.shape[0] // batch_size)
    epochs_of_batches = (batches(x, y, batch_size=batch_size, seed=seed * 1_000_003 + e) for e in range(epochs))
    return (b for epoch in epochs_of_batches for b in epoch), n_batches


def train(
    params: Params,
    x: Array,
    y: Array,
    *,
    method: str = "pc",
    optimizer: optax.GradientTransformation | None = None,
    epochs: int = 1,
    batch_size: int = 64,
    seed: int = 0,
    act: Activation = "tanh",
    out_act: Activation = "linear",
    steps: int = 20,
    dt: float = 0.1,
    precisions: Any = None,
    progress: bool = True,
    callback: Callable[[int, Params], None] | None = None,
    param: str = "standard",
) -> tuple[Params, dict]:
    """Train with PC or BP on ``(x, y)`` for ``epochs`` passes of shuffled minibatches.

    Returns the trained parameters and a history dict with per-iteration ``"loss"`` (the batch
    loss before each update). ``callback(iteration, params)``, if given, runs after every update.
    The optimiser defaults to SGD with learning rate 0.1. A PC step whose inference diverges
    raises :class:`pclib.inference.InferenceDivergedError`.
    """
    check_params(params)
    check_param(param, params)
    x, y = jnp.asarray(x), jnp.asarray(y)
    check_data(params, x, y)
    optimizer = optimizer if optimizer is not None else optax.sgd(0.1)
    step = make_step(optimizer, method=method, act=act, out_act=out_act, steps=steps, dt=dt, precisions=precisions,
                     param=param)
    opt_state = optimizer.init(params)
    history: dict[str, list] = {"loss": []}
    stream, n_batches = minibatch_stream(x, y, epochs=epochs, batch_size=batch_size, seed=seed)
    for it, (xb, yb) in enumerate(tqdm(stream, total=n_batches, desc=method.upper(), disable=not progress)):
        params, opt_state, info = step(params, opt_state, xb, yb)
        if method == "pc":
            check_energies(info.energies, dt=dt, steps=steps)
        history["loss"].append(float(info.loss))
        if callback is not None:
            callback(it, params)
    return params, history


# --- chapter 4: learning-rate search ---


class LRSearch(NamedTuple):
    """Result of :func:`lr_grid_search`: the best learning rate, every rate's score (``inf`` where
    training diverged) and loss history (``None`` where it diverged), and the trained params at the best rate."""

    best_lr: float
    scores: dict
    histories: dict
    params: Params


def run_score(loss: Any, *, diverged: bool = False, score: str = "mean") -> float:
    r"""The score of one training run, lower is better: the mean batch loss over all iterations
    (``score="mean"``, the area under the curve) or over the last 10% (``score="final"``).

    ``inf`` marks a diverged run: ``diverged`` (weights or PC inference blew up), a NaN/inf loss, or a
    last loss above 10 times the first. Shared by :func:`lr_grid_search` and :func:`pclib.compare.compare`.
    """
    import numpy as np

    loss = np.asarray(loss, dtype=np.float64)
    if diverged or not np.all(np.isfinite(loss)) or loss[-1] > 10 * loss[0]:
        return float("inf")
    tail = loss[-max(1, loss.size // 10):] if score == "final" else loss
    return float(np.mean(tail))


def lr_grid_search(
    params: Params,
    x: Array,
    y: Array,
    *,
    lrs: Any,
    method: str = "pc",
    optimizer: Callable[[float], optax.GradientTransformation] = optax.sgd,
    score: str = "mean",
    **train_options: Any,
) -> LRSearch:
    r"""Train a copy of ``params`` with :func:`train` at every learning rate in ``lrs`` and pick the best.

    ``optimizer(lr)`` builds the optax optimiser (default SGD). ``score="mean"`` ranks rates by the
    mean training loss over all iterations (the area under the training curve, which rewards fast
    convergence); ``score="final"`` by the mean over the last 10% of iterations. A run *diverged*, and
    scores ``inf``, if its loss or weights become NaN/inf, its last loss is above 10 times its first,
    or its PC inference diverges. Other keywords go to :func:`train`
    (``method`` included); every rate sees the same minibatches.
    """
    from .inference import InferenceDivergedError

    lrs = [float(lr) for lr in lrs]
    if not lrs or min(lrs) <= 0:
        raise ValueError(f"lrs must be a non-empty list of positive learning rates, e.g. [1e-3, 1e-2, 1e-1]; got {lrs}")
    if score not in ("mean", "final"):
        raise ValueError(f"unknown score {score!r}: use 'mean' (area under the loss curve) or 'final'")
    scores, histories, trained = {}, {}, {}
    for lr in lrs:
        try:
            p, hist = train(params, x, y, method=method, optimizer=optimizer(lr), **train_options)
            loss = jnp.asarray(hist["loss"])
        except InferenceDivergedError:
            scores[lr], histories[lr] = float("inf"), None
            continue
        finite = all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree_util.tree_leaves(p))
        scores[lr] = run_score(loss, diverged=not finite, score=score)
        if scores[lr] == float("inf"):
            histories[lr] = None
            continue
        histories[lr], trained[lr] = [float(v) for v in loss], p
    best = min(lrs, key=lambda lr: scores[lr])
    if scores[best] == float("inf"):
        raise ValueError(f"training diverged at every learning rate in {lrs}; try smaller rates")
    return LRSearch(best, scores, histories, trained[best])


# --- chapter 2: EM view ---


def update_cosine(a: Params, b: Params, *, per_layer: bool = False) -> Array:
    r"""Cosine similarity $\langle a, b\rangle / (\lVert a\rVert\,\lVert b\rVert)$ between two weight updates.

    ``a`` and ``b`` are pytrees like ``params`` (e.g. :func:`pc_grads` and :func:`bp_grads`). With
    ``per_layer=True``, one cosine per layer dict (its ``W`` and ``b`` together), shape ``(L,)``;
    otherwise one over all parameters, as in Fig. 4C of Millidge et al. (2022).

    Raises ``ValueError`` for pytrees of different structure or a zero update (cosine undefined).
    """
    if jax.tree_util.tree_structure(a) != jax.tree_util.tree_structure(b):
        raise ValueError("update_cosine needs two updates with the same structure (both shaped like params)")

    def cos(u, v):
        norms = [jnp.sqrt(sum(jnp.sum(p**2) for p in jax.tree_util.tree_leaves(t))) for t in (u, v)]
        if not any(isinstance(n, jax.core.Tracer) for n in norms) and min(float(n) for n in norms) == 0.0:
            raise ValueError("update_cosine is undefined for a zero update; check that the gradients are non-zero")
        return cosine(u, v)

    if per_layer:
        return jnp.stack([cos(u, v) for u, v in zip(a, b)])
    return cos(a, b)


def _cosine_traced(a: Params, b: Params) -> tuple[Array, Array]:
    """(overall cosine, per-layer cosines) without the concrete zero check, for use inside ``jit``."""
    return cosine(a, b), jnp.stack([cosine(u, v) for u, v in zip(a, b)])


def _compare_run(params, x, y, idx, lr, dt, pi, *, optimizer, act, out_act, steps):
    """:func:`train_compare`'s whole run, one ``lax.scan`` over the minibatches ``x[idx[t]]``."""
    opt = optimizer if isinstance(optimizer, optax.GradientTransformation) else optimizer(lr)
    norm = lambda g: jnp.sqrt(sum(jnp.sum(v**2) for v in jax.tree_util.tree_leaves(g)))  # noqa: E731

    def body(carry, rows):
        p, state = carry
        xb, yb = x[rows], y[rows]
        loss = _mse_loss(p, xb, yb, act=act, out_act=out_act)
        res = infer(p, xb, yb, act=act, out_act=out_act, steps=steps, dt=dt, precisions=pi, check=False)
        g_pc = _pc_grads(p, res.activities, pi, act=act, out_act=out_act)
        g_bp = _bp_grads(p, xb, yb, act=act, out_act=out_act)
        c, c_layers = _cosine_traced(g_pc, g_bp)
        updates, state = opt.update(g_pc, state, p)
        return (optax.apply_updates(p, updates), state), (loss, c, c_layers, norm(g_pc), norm(g_bp), res.energies)

    (p_end, _), rows = jax.lax.scan(body, (params, opt.init(params)), idx)
    return p_end, rows


_compare_run_jit = jax.jit(_compare_run, static_argnames=("optimizer", "act", "out_act", "steps"))


def train_compare(
    params: Params,
    x: Array,
    y: Array,
    *,
    optimizer: optax.GradientTransformation | Callable[[Any], optax.GradientTransformation] | None = None,
    lr: float | None = None,
    epochs: int = 1,
    batch_size: int = 64,
    seed: int = 0,
    act: Activation = "tanh",
    out_act: Activation = "linear",
    steps: int = 20,
    dt: float = 0.1,
    precisions: Any = None,
) -> tuple[Params, dict]:
    r"""Train with PC and record, at every iteration, how PC's update compares with backprop's.

    At each minibatch, with the current weights, this computes PC's gradient (``steps`` inference
    steps from the feedforward pass, then :func:`pc_grads`) and backprop's gradient (:func:`bp_grads`)
    and applies PC's through the optimiser. The cosine compares the raw gradients, before the
    optimiser (Millidge et al. 2022, Fig. 4C).

    ``optimizer`` is an optax transformation (default SGD with rate 0.1), or, with ``lr``, a factory
    ``optimizer(lr)`` as in :func:`pclib.compare.compare`, called with a traced rate. The whole run is one
    compiled ``lax.scan`` over the minibatches (the order of :func:`minibatch_stream`); it is reused by
    every call with the same shapes, options and optimiser (or factory), so with a factory, runs at
    different rates and seeds compile once. ``dt`` and ``precisions`` are traced too.

    Returns the trained parameters and a history dict of NumPy arrays, one entry per iteration:
    ``"loss"`` (batch loss before the update), ``"cosine"`` (over all parameters),
    ``"cosine_layers"`` (shape ``(iterations, L)``), ``"pc_norm"`` and ``"bp_norm"`` (gradient norms).
    Raises :class:`pclib.inference.InferenceDivergedError` if inference diverged at some iteration.
    """
    import numpy as np

    check_params(params)
    x, y = jnp.asarray(x), jnp.asarray(y)
    check_data(params, x, y)
    static_options(act, out_act)
    if lr is None:
        optimizer = optimizer if optimizer is not None else optax.sgd(0.1)
        if not isinstance(optimizer, optax.GradientTransformation):
            raise ValueError("optimizer is a factory optimizer(lr): pass lr=... too, or pass an optax transformation")
        lr = 0.0
    elif optimizer is None or isinstance(optimizer, optax.GradientTransformation):
        raise ValueError("with lr, optimizer must be a factory optimizer(lr) -> optax transformation, e.g. optax.sgd")
    rows = np.arange(x.shape[0])
    stream, _ = minibatch_stream(rows, rows, epochs=epochs, batch_size=batch_size, seed=seed)
    idx = jnp.asarray(np.stack([r for r, _ in stream]))
    dtype = params[0]["W"].dtype
    pi = as_precisions(precisions, len(params), dtype)
    params, out = _compare_run_jit(params, x, y, idx, jnp.asarray(lr, dtype), jnp.asarray(dt, dtype), pi,
                                   optimizer=optimizer, act=act, out_act=out_act, steps=int(steps))
    energies = np.asarray(out[-1])
    bad = ~np.all(np.isfinite(energies), axis=1) | (energies.max(axis=1) > 2.0 * energies[:, 0] + 1e-8)
    if bad.any():
        check_energies(energies[int(np.argmax(bad))], dt=float(dt), steps=int(steps))
    keys = ("loss", "cosine", "cosine_layers", "pc_norm", "bp_norm")
    history = {k: np.asarray(v, dtype=np.float64) for k, v in zip(keys, out[:-1])}
    return params, history


def __getattr__(name: str) -> Any:
    # pclib.compare builds on this module; its entry points are re-exported here on first use.
    if name in ("compare", "Comparison"):
        from . import compare as _compare

        return getattr(_compare, name)
    raise AttributeError(f"module 'pclib.learning' has no attribute {name!r}")
