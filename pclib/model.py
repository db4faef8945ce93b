r"""Multilayer perceptrons as plain pytrees, and their feedforward pass.

A network with $L$ layers is a list of layer dicts ``{"W": (d_out, d_in), "b": (d_out,)}``
(``"b"`` may be absent). Layer $l$ predicts

$$\mu_l = f_l(W_l z_{l-1} + b_l), \qquad l = 1, \dots, L,$$

where $f_l$ is ``act`` for the hidden layers $l < L$ and ``out_act`` for the output layer.
Activities are stored as a list ``[z_0, z_1, ..., z_L]`` of arrays of shape ``(N, d_l)``:
$z_0$ is the input, $z_L$ the output.

The option ``param="mupc"`` (accepted by every function that computes predictions) reads the same pytree
as the residual network of μPC (Innocenti, Achour & Buckley 2025), with weights $W_l \sim \mathcal N(0, 1)$
(:func:`init_mupc`) and each layer's contribution scaled (:func:`mupc_predictors`).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
Params = list  # list[dict[str, Array]]: [{"W": (d_out, d_in), "b": (d_out,)}, ...]
Activation = Union[str, Callable[[Array], Array]]
PARAMS = ("standard", "mupc")  # the parameterisations: how the weights of a layer make its prediction

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "linear": lambda a: a,
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
}


# --- random draws, compiled once per size bucket ---

_MIN_DRAW = 256


def _draw_size(n: int) -> int:
    """The length actually drawn for ``n`` values: the next power of two, at least ``_MIN_DRAW``."""
    return max(_MIN_DRAW, 1 << max(int(n) - 1, 0).bit_length())


def _prefix_draws(key: Any) -> bool:
    """Whether a draw of ``n`` values equals the first ``n`` of a longer draw with the same key: true for the
    partitionable threefry generator (JAX's default), where each value depends only on the key and its index."""
    if isinstance(key, jax.core.Tracer) or not jax.config.jax_threefry_partitionable:
        return False
    try:
        return str(jax.random.key_impl(key)) == "threefry2x32"
    except (TypeError, ValueError):
        return False


def split_keys(key: Array, n: int) -> list[Array]:
    """``list(jax.random.split(key, n))``, the same keys bit for bit.

    JAX compiles a split (and the indexing of its result) once per ``n``; with the partitionable threefry
    generator the first ``n`` keys of a longer split are the keys of this one, so we split a bucketed length
    (:func:`_draw_size`) and cut it on the host. Other generators, and traced keys, split directly.
    """
    if not _prefix_draws(key):
        return list(jax.random.split(key, n))
    keys = jax.random.split(key, _draw_size(n))
    typed = jnp.issubdtype(keys.dtype, jax.dtypes.prng_key)
    data = np.asarray(jax.random.key_data(keys) if typed else keys)[:n]
    return [jax.random.wrap_key_data(d, impl=jax.random.key_impl(key)) if typed else jnp.asarray(d) for d in data]


def normal(key: Array, shape: Sequence[int], dtype: Any) -> Any:
    """``jax.random.normal(key, shape, dtype)``, the same values bit for bit, as a NumPy array when possible.

    Compiling a normal draw costs about a second on a CPU, and JAX compiles one per shape. With the
    partitionable threefry generator a draw of $n$ values is the first $n$ of any longer draw with the same
    key, so we draw a bucketed length (:func:`_draw_size`: one compiled program serves every shape up to
    it) and cut and reshape it on the host. Other generators, other dtypes and traced keys draw directly
    (a JAX array).
    """
    shape = tuple(int(d) for d in shape)
    if not (_prefix_draws(key) and np.dtype(dtype) in (np.float32, np.float64)):
        return jax.random.normal(key, shape, dtype)
    n = math.prod(shape)
    return np.asarray(jax.random.normal(key, (_draw_size(n),), dtype))[:n].reshape(shape)


def get_activation(act: Activation) -> Callable[[Array], Array]:
    """Return the activation function for a name in :data:`ACTIVATIONS`, or ``act`` if callable.

    Raises
    ------
    ValueError
        If ``act`` is an unknown name; the message lists the valid names.
    """
    if callable(act):
        return act
    if isinstance(act, str) and act in ACTIVATIONS:
        return ACTIVATIONS[act]
    valid = ", ".join(repr(k) for k in ACTIVATIONS)
    raise ValueError(
        f"unknown activation {act!r}: use one of {valid}, or pass a callable such as jax.nn.sigmoid"
    )


def layer_activations(n_layers: int, *, act: Activation, out_act: Activation) -> list[Callable]:
    """The activation of each layer $1..L$: ``act`` for hidden layers, ``out_act`` for the last."""
    f, f_out = get_activation(act), get_activation(out_act)
    return [f] * (n_layers - 1) + [f_out]


def static_options(*options: Any) -> bool:
    """Validate activation options and say whether they can be static arguments of ``jax.jit``.

    Names are checked against :data:`ACTIVATIONS` (raising the usual ``ValueError``); the result is
    ``False`` only for an unhashable callable, which the compiled entry points then run op by op.
    """
    for o in options:
        get_activation(o)
    try:
        hash(options)
    except TypeError:
        return False
    return True


def widths_of(params: Params) -> list[int]:
    """Layer widths ``[d_0, d_1, ..., d_L]`` of a network."""
    return [int(params[0]["W"].shape[1])] + [int(layer["W"].shape[0]) for layer in params]


def check_params(params: Params) -> None:
    """Validate the structure and shapes of a network, naming the offending layer.

    Raises
    ------
    ValueError
        If ``params`` is not a non-empty list of ``{"W", "b"}`` dicts with chained shapes.
    """
    if not isinstance(params, (list, tuple)) or len(params) == 0:
        raise ValueError(
            f"params must be a non-empty list of layer dicts {{'W': (d_out, d_in), 'b': (d_out,)}}; "
            f"got {type(params).__name__}. Build one with pclib.init_mlp(key, widths)."
        )
    d_prev = None
    for l, layer in enumerate(params, start=1):
        if not isinstance(layer, dict) or "W" not in layer:
            raise ValueError(f"layer {l}: expected a dict with key 'W' (and optionally 'b'); got {layer!r:.80}")
        W = layer["W"]
        if W.ndim != 2:
            raise ValueError(f"layer {l}: W must be 2-D (d_out, d_in); got shape {tuple(W.shape)}")
        if d_prev is not None and W.shape[1] != d_prev:
            raise ValueError(
                f"layer {l}: W has shape {tuple(W.shape)} but layer {l - 1} has {d_prev} units; "
                f"W_{l} must have shape ({W.shape[0]}, {d_prev})"
            )
        b = layer.get("b")
        if b is not None and tuple(b.shape) != (W.shape[0],):
            raise ValueError(
                f"layer {l}: b has shape {tuple(b.shape)} but W has shape {tuple(W.shape)}; "
                f"b_{l} must have shape ({W.shape[0]},)"
            )
        d_prev = W.shape[0]


def check_data(params: Params, x: Any, y: Any = None, *, name_x: str = "x", name_y: str = "y") -> None:
    """Check that data of shape ``(N, features)`` fits the network's input (and output) width.

    Raises
    ------
    ValueError
        On wrong rank, wrong feature count, or mismatched batch sizes.
    """
    d_in, d_out = params[0]["W"].shape[1], params[-1]["W"].shape[0]
    for arr, nm, d, where in ((x, name_x, d_in, "input"), (y, name_y, d_out, "output")):
        if arr is None:
            continue
        shape = tuple(jnp.shape(arr))
        if len(shape) != 2:
            raise ValueError(
                f"{nm} must be 2-D with shape (N, {d}) (N samples, {d} features); got shape {shape}. "
                f"For a single sample use {nm}[None, :]."
            )
        if shape[1] != d:
            raise ValueError(
                f"{nm} has {shape[1]} features but the network's {where} layer has {d} units "
                f"(expected shape (N, {d}), got {shape})"
            )
    if x is not None and y is not None and jnp.shape(x)[0] != jnp.shape(y)[0]:
        raise ValueError(
            f"{name_x} and {name_y} must have the same number of samples; "
            f"got {jnp.shape(x)[0]} and {jnp.shape(y)[0]}"
        )


def init_mlp(
    key: Array,
    widths: Sequence[int],
    *,
    act: Activation = "tanh",
    out_act: Activation = "linear",
    scale: float | None = None,
    bias: bool = True,
    dtype: Any = None,
) -> Params:
    r"""Initialise an MLP with widths ``[d_0, ..., d_L]``.

    Weights are drawn $W_l \sim \mathcal N(0, \sigma_l^2)$ and biases start at zero.
    With ``scale=None``, $\sigma_l = g / \sqrt{d_{l-1}}$ with gain $g = \sqrt 2$ for ReLU
    hidden layers and $g = 1$ otherwise (LeCun/He initialisation). A float ``scale`` sets
    $\sigma_l$ = ``scale`` for every layer, e.g. ``scale=5e-3`` for a near-origin start
    as in Innocenti et al. (2024).

    Parameters
    ----------
    key : PRNG key.
    widths : layer widths, input first; at least two entries.
    act, out_act : used only to choose the default gain; they are not stored.
    scale : weight standard deviation, or ``None`` for the fan-in default.
    bias : include ``"b"`` in each layer.
    dtype : float dtype (default: JAX's default float, float64 under ``jax_enable_x64``).
    """
    widths = [int(w) for w in widths]
    if len(widths) < 2 or min(widths) < 1:
        raise ValueError(f"widths must list at least an input and an output width, all >= 1; got {widths}")
    get_activation(act), get_activation(out_act)  # validate names early
    dtype = dtype or jnp.result_type(float)
    keys = split_keys(key, len(widths) - 1)
    params = []
    for l, (k, d_in, d_out) in enumerate(zip(keys, widths[:-1], widths[1:]), start=1):
        if scale is None:
            is_relu = act == "relu" and l < len(widths) - 1
            std = (math.sqrt(2.0) if is_relu else 1.0) / math.sqrt(d_in)
        else:
            std = float(scale)
        layer = {"W": jnp.asarray(std * normal(k, (d_out, d_in), dtype))}
        if bias:
            layer["b"] = jnp.asarray(np.zeros((d_out,), dtype))
        params.append(layer)
    return params


def preactivation(layer: dict, z_prev: Array) -> Array:
    """$W z + b$ for a batch ``z_prev`` of shape ``(N, d_in)``."""
    a = z_prev @ layer["W"].T
    b = layer.get("b")
    return a if b is None else a + b


def forward(params: Params, x: Array, *, act: Activation = "tanh", out_act: Activation = "linear",
            param: str = "standard") -> list[Array]:
    r"""Feedforward pass: the activities $[x, \hat z_1, \dots, \hat z_L]$ with $\hat z_l = f_l(W_l \hat z_{l-1} + b_l)$,
    or, with ``param="mupc"``, $\hat z_l = \mu_l(\hat z_{l-1})$ of :func:`mupc_predictors`."""
    check_params(params)
    check_param(param, params)
    x = jnp.asarray(x)
    check_data(params, x)
    zs = [x]
    if param != "standard":
        for layer, mu in zip(params, mupc_predictors(params, act=act, out_act=out_act)):
            zs.append(mu(layer, zs[-1]))
        return zs
    fs = layer_activations(len(params), act=act, out_act=out_act)
    for layer, f in zip(params, fs):
        zs.append(f(preactivation(layer, zs[-1])))
    return zs


def predict(params: Params, x: Array, *, act: Activation = "tanh", out_act: Activation = "linear",
            param: str = "standard") -> Array:
    """The network output $\\hat y = \\hat z_L$."""
    return forward(params, x, act=act, out_act=out_act, param=param)[-1]


# --- muPC: depth-stable residual networks (Innocenti, Achour & Buckley 2025) ---


def check_param(param: Any, params: Params | None = None) -> None:
    """Validate a parameterisation name (one of :data:`PARAMS`) and, for ``"mupc"``, the widths of ``params``.

    Raises
    ------
    ValueError
        For an unknown name (the message lists the choices), or widths that μPC cannot use
        (:func:`mupc_scales`).
    """
    if not (isinstance(param, str) and param in PARAMS):
        raise ValueError(f"unknown param {param!r}: use one of {', '.join(map(repr, PARAMS))} "
                         f"('standard': mu_l = f(W_l z_(l-1) + b_l); 'mupc': the scaled residual network of muPC)")
    if param == "mupc" and params is not None:
        mupc_scales(widths_of(params))


def mupc_scales(widths: Sequence[int]) -> tuple[float, ...]:
    r"""The μPC scalings $(a_1, \dots, a_L)$ of a network with widths ``[D, N, ..., N, C]``:
    $a_1 = 1/\sqrt D$ (input layer), $a_l = 1/\sqrt{N L}$ (the residual layers $l = 2..L-1$), $a_L = 1/N$ (output),
    with $L$ the number of weight layers (Innocenti, Achour & Buckley 2025; jpc's ``_get_param_scalings``).

    Raises
    ------
    ValueError
        For fewer than two weight layers, or unequal hidden widths (the residual connections
        $z_l = z_{l-1} + \dots$ add vectors of the same size).
    """
    widths = [int(w) for w in widths]
    if len(widths) < 3 or min(widths) < 1:
        raise ValueError(f"muPC needs at least two weight layers (widths [D, N, C] or longer, all >= 1); got {widths}. "
                         f"Use e.g. widths=[D] + [N] * (L - 1) + [C].")
    hidden = widths[1:-1]
    if len(set(hidden)) != 1:
        raise ValueError(f"muPC's residual connections z_l = z_(l-1) + a_l W_l phi(z_(l-1)) need equal hidden widths; "
                         f"got hidden widths {hidden}. Use widths=[{widths[0]}] + [N] * {len(hidden)} + [{widths[-1]}] "
                         f"with one width N.")
    D, N, L = widths[0], hidden[0], len(widths) - 1
    return (1.0 / math.sqrt(D),) + (1.0 / math.sqrt(N * L),) * (L - 2) + (1.0 / N,)


def init_mupc(key: Array, widths: Sequence[int], *, dtype: Any = jnp.float32) -> Params:
    r"""A μPC network: the pytree of :func:`init_mlp` with $W_l \sim \mathcal N(0, 1)$ and zero biases; the
    scalings live in the predictions (``param="mupc"``, :func:`mupc_predictors`), not in the weights.
    The hidden widths must be equal (:func:`mupc_scales` raises a ``ValueError`` otherwise)."""
    widths = [int(w) for w in widths]
    mupc_scales(widths)
    keys = split_keys(key, len(widths) - 1)
    return [{"W": jnp.asarray(normal(k, (d_out, d_in), dtype)), "b": jnp.asarray(np.zeros((d_out,), dtype))}
            for k, d_in, d_out in zip(keys, widths[:-1], widths[1:])]


def mupc_predictors(params: Params, *, act: Activation = "tanh", out_act: Activation = "linear") -> list[Callable]:
    r"""The μPC prediction of each layer, as functions ``mu_l(layer, z_prev)``, with $(a_l)$ of :func:`mupc_scales`:

    $$\mu_1 = a_1 (W_1 x + b_1), \qquad \mu_l = z_{l-1} + a_l\big(W_l\,\phi(z_{l-1}) + b_l\big)\ (l = 2..L-1),
    \qquad \mu_L = f_L\big(a_L (W_L\,\phi(z_{L-1}) + b_L)\big),$$

    $\phi$ = ``act`` applied before the weights (so $z_l$ are pre-activations) and $f_L$ = ``out_act``
    (the book's networks: linear). As in jpc (``make_mlp`` + ``make_skip_model``) the input and output layers
    have no skip connection and the scaling multiplies the bias too (jpc's μPC nets have none by default).
    """
    a = mupc_scales(widths_of(params))
    phi, f_out = get_activation(act), get_activation(out_act)

    def first(layer, z):
        return a[0] * preactivation(layer, z)

    def hidden(layer, z, a_l):
        return z + a_l * preactivation(layer, phi(z))

    def last(layer, z):
        return f_out(a[-1] * preactivation(layer, phi(z)))

    return [first] + [lambda layer, z, a_l=a_l: hidden(layer, z, a_l) for a_l in a[1:-1]] + [last]


def mupc_effective_params(params: Params) -> Params:
    r"""The standard linear network that a *linear* μPC network equals: $M_1 = a_1 W_1$, $M_l = I + a_l W_l$
    ($l = 2..L-1$), $M_L = a_L W_L$, biases $a_l b_l$. With ``act = out_act = "linear"`` the μPC predictions are
    $\mu_l = M_l z_{l-1} + a_l b_l$, so the energy, its equilibria and the closed forms of
    :mod:`pclib.theory.linear` carry over."""
    a = mupc_scales(widths_of(params))
    out = []
    for l, (layer, a_l) in enumerate(zip(params, a)):
        M = a_l * layer["W"]
        if 0 < l < len(params) - 1:
            M = M + jnp.eye(M.shape[0], dtype=M.dtype)
        out.append({"W": M, **({"b": a_l * layer["b"]} if layer.get("b") is not None else {})})
    return out


def random_problem(
    seed: int,
    widths: Sequence[int],
    *,
    act: Activation = "tanh",
    n: int = 32,
    bias: bool = True,
    bias_scale: float = 0.1,
    scale: float | None = None,
) -> tuple[Params, Array, Array]:
    """A random network with random biases (std ``bias_scale``), standard-normal inputs ``(n, d_0)``
    and standard-normal targets ``(n, d_L)``, all from one integer seed. For checks over many nets."""
    k1, k2, k3, k4 = split_keys(jax.random.key(seed), 4)
    params = init_mlp(k1, widths, act=act, bias=bias, scale=scale)
    if bias:
        params = [dict(p, b=jnp.asarray(bias_scale * normal(k, p["b"].shape, p["b"].dtype)))
                  for p, k in zip(params, split_keys(k4, len(params)))]
    dtype = params[0]["W"].dtype
    return params, jnp.asarray(normal(k2, (n, widths[0]), dtype)), jnp.asarray(normal(k3, (n, widths[-1]), dtype))
