"""Chapter 5 (strict saddles): the equilibrated energy of deep linear networks and its Hessians.

Expected values come from closed forms (``pclib.theory``) or independent computations
(iterative inference, ``jax.hessian`` of the loss, dense eigendecompositions).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pclib
from pclib import escape, landscape, theory


def mse(p, x, y):
    return pclib.mse_loss(p, x, y, act="linear")


def F_star(p, x, y):
    return theory.equilibrated_energy(p, x, y)


def zeros_like_net(params):
    return [{k: jnp.zeros_like(v) for k, v in layer.items()} for layer in params]


widths_strategy = st.lists(st.integers(1, 5), min_size=2, max_size=6)


def np_problem(seed, widths, *, bias=False, n=16):
    """A random network (weights of std 1/sqrt(fan-in), biases of std 0.3), inputs and targets, drawn with NumPy:
    unlike pclib.init_mlp's JAX draws, nothing is compiled for a new shape."""
    rng = np.random.default_rng(seed)
    params = []
    for a, b in zip(widths[:-1], widths[1:]):
        layer = {"W": jnp.asarray(rng.standard_normal((b, a)) / np.sqrt(a))}
        if bias:
            layer["b"] = jnp.asarray(0.3 * rng.standard_normal(b))
        params.append(layer)
    return params, jnp.asarray(rng.standard_normal((n, widths[0]))), jnp.asarray(rng.standard_normal((n, widths[-1])))


def both_hessians(p, x, y, gradients=False):
    """Hessians of L and F* (and their gradients) from one compiled program per shape."""
    out = landscape.hessians((mse, F_star), p, x, y, gradients=gradients)
    if gradients:
        (HL, HF), (gL, gF) = out
        return np.asarray(HL), np.asarray(HF), np.asarray(gL), np.asarray(gF)
    return tuple(np.asarray(h) for h in out)


# --- Theorem 1: the equilibrated energy -------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), widths=widths_strategy, bias=st.booleans(), precisions=st.booleans())
def test_equilibrated_energy_equals_energy_at_closed_form_equilibrium(seed, widths, bias, precisions):
    params, x, y = np_problem(seed, widths, bias=bias)
    pi = None
    if precisions:
        pi = jnp.asarray(np.exp(np.random.default_rng(seed + 1).standard_normal(len(params))))
    star = theory.linear_equilibrium(params, x, y, precisions=pi)
    expected = pclib.energy(params, star, act="linear", precisions=pi)
    got = theory.equilibrated_energy(params, x, y, precisions=pi)
    assert abs(got - expected) <= 1e-9 * (1 + abs(expected))


@pytest.mark.parametrize("widths", [[6, 8, 4], [6, 8, 8, 8, 4], [5] + [6] * 10 + [3]])
@pytest.mark.parametrize("seed", [0, 1])
def test_equilibrated_energy_equals_energy_after_iterative_inference(widths, seed, net):
    params, x, y = net(seed, widths, act="linear", bias=False)
    lam = np.linalg.eigvalsh(np.asarray(theory.linear_activity_hessian(params)))
    dt = 1.0 / lam[-1]
    steps = int(np.ceil(np.log(1e-12) / np.log(1 - dt * lam[0])))
    res = pclib.infer(params, x, y, act="linear", steps=steps, dt=dt)
    F_inf = pclib.energy(params, res.activities, act="linear")
    F_th = theory.equilibrated_energy(params, x, y)
    assert abs(F_inf - F_th) / F_th < 1e-8


def test_equilibrium_covariance_is_the_sum_of_product_outer_products():
    params, _, _ = pclib.random_problem(3, [4, 5, 6, 3, 2], act="linear", bias=False)
    Ws = [p["W"] for p in params]
    L = len(Ws)
    expected = jnp.eye(2)
    for l in range(2, L + 1):  # (W_L ... W_l)(W_L ... W_l)^T, 1-based l
        M = Ws[L - 1]
        for k in range(L - 2, l - 2, -1):
            M = M @ Ws[k]
        expected = expected + M @ M.T
    assert np.allclose(theory.equilibrium_covariance(params), expected, atol=1e-12)


def test_equilibrated_energy_is_pc_learning_objective():
    """The PC weight gradient at the equilibrium is the gradient of F* (envelope theorem)."""
    params, x, y = pclib.random_problem(5, [4, 6, 6, 3], act="linear", bias=True)
    star = theory.linear_equilibrium(params, x, y)
    g_pc = pclib.pc_grads(params, star, act="linear")
    g_th = jax.grad(F_star)(params, x, y)
    for a, b in zip(jax.tree_util.tree_leaves(g_pc), jax.tree_util.tree_leaves(g_th)):
        assert np.allclose(a, b, atol=1e-10)


def test_equilibrated_energy_is_the_mse_for_a_single_layer_and_below_it_otherwise(net):
    params, x, y = net(0, [4, 3], act="linear")
    assert np.isclose(theory.equilibrated_energy(params, x, y), pclib.mse_loss(params, x, y, act="linear"))
    for seed in range(5):
        params, x, y = net(seed, [4, 5, 5, 3], act="linear")
        assert theory.equilibrated_energy(params, x, y) <= pclib.mse_loss(params, x, y, act="linear") + 1e-12


# --- the origin -------------------------------------------------------------------------------


ORIGIN_WIDTHS = [[3, 4, 2], [5, 3, 4], [3, 4, 4, 2], [4, 3, 5, 3], [3, 2, 3, 4, 2], [2, 3, 3, 3, 3, 3]]


@pytest.mark.parametrize("widths", ORIGIN_WIDTHS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_origin_hessians_and_spectra_match_autodiff(widths, seed):
    """Theorem 2 against the autodiff Hessians of L and F* at the origin: every entry, every eigenvalue, the
    matrix-free products of theory.origin_hvp, and lambda_min(F*) = -lambda_max(Syy) for two or more hidden layers."""
    params, x, y = np_problem(seed, widths)
    origin = zeros_like_net(params)
    HL, HF = both_hessians(origin, x, y)
    HL_th, HF_th = theory.origin_hessians(widths, x, y)
    assert np.allclose(HL, HL_th, atol=1e-12) and np.allclose(HF, HF_th, atol=1e-12)
    v = np.random.default_rng(seed).standard_normal(HL.shape[0])
    hl, hf = theory.origin_hvp(widths, x, y)(v)
    assert np.allclose(hl, HL @ v, atol=1e-12) and np.allclose(hf, HF @ v, atol=1e-12)
    sL, sF = theory.origin_spectra(widths, x, y)
    eL, eF = np.linalg.eigvalsh(0.5 * (HL + HL.T)), np.linalg.eigvalsh(0.5 * (HF + HF.T))
    assert np.allclose(eL, sL, atol=1e-10) and np.allclose(eF, sF, atol=1e-10)
    Syy = np.asarray(y.T @ y / y.shape[0])
    if len(widths) >= 4:  # two or more hidden layers: L's Hessian vanishes, F*'s lambda_min = -lambda_max(Syy)
        assert np.abs(HL).max() == 0.0
        assert np.isclose(eF[0], -np.linalg.eigvalsh(Syy)[-1], rtol=1e-10)
    assert eF[0] < -0.1  # strict


def test_origin_is_critical_for_both():
    params, x, y = pclib.random_problem(0, [3, 4, 4, 2], act="linear", bias=False)
    origin = zeros_like_net(params)
    for fn in (mse, F_star):
        g = landscape.flatten(jax.grad(fn)(origin, x, y))[0]
        assert np.abs(g).max() == 0.0


# --- other zero-rank saddles --------------------------------------------------------------


@pytest.mark.parametrize("widths", [[3, 4, 4, 2], [3, 4, 3, 4, 2], [2, 3, 3, 3, 3, 2]])
@pytest.mark.parametrize("seed", [0, 1])
def test_zero_rank_saddles_with_top_layer_zero_are_strict_in_F(widths, seed):
    params, x, y = np_problem(seed, widths)
    L = len(params)
    for keep in range(L - 1):  # all layers zero except layer `keep` (< L): W_L = 0 and W_{L-1}...W_1 = 0
        p = [layer if i == keep else {"W": jnp.zeros_like(layer["W"])} for i, layer in enumerate(params)]
        HL, HF, gL, gF = both_hessians(p, x, y, gradients=True)
        assert max(np.abs(gL).max(), np.abs(gF).max()) < 1e-14
        K = theory.zero_rank_energy_curvature(p, y)
        m = K.shape[0]
        D = HF - HL
        assert np.allclose(D[-m:, -m:], K, atol=1e-12)
        assert np.abs(D[:-m]).max() < 1e-12 and np.abs(D[:, :-m]).max() < 1e-12
        Syy = np.asarray(y.T @ y / y.shape[0])
        G = np.asarray(theory.equilibrium_covariance(p[:-1]))
        lam_min = np.linalg.eigvalsh(np.asarray(HF))[0]
        assert lam_min <= -np.linalg.eigvalsh(Syy)[-1] * np.linalg.eigvalsh(G)[-1] + 1e-10
        if L >= 4:  # three or more hidden layers: the MSE's Hessian vanishes there (non-strict)
            assert np.abs(HL).max() < 1e-14


@pytest.mark.parametrize("widths", [[3, 4, 4, 2], [3, 4, 3, 4, 2]])
def test_top_layer_only_is_not_a_critical_point_of_F(widths):
    """H >= 2: with only W_L non-zero, L is critical (every product keeps a zero factor) but F* is not."""
    params, x, y = pclib.random_problem(0, widths, act="linear", bias=False)
    p = [{"W": jnp.zeros_like(l["W"])} for l in params[:-1]] + [params[-1]]
    assert np.abs(landscape.flatten(jax.grad(mse)(p, x, y))[0]).max() < 1e-14
    assert np.abs(landscape.flatten(jax.grad(F_star)(p, x, y))[0]).max() > 1e-3


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_top_layer_only_with_one_hidden_layer_is_not_critical_for_L(seed):
    """H = 1: with W_1 = 0, dL/dW_1 = -W_2^T C (C = mean_i y_i x_i^T) is non-zero, so the H >= 2 condition
    of the chapter's remark is needed."""
    params, x, y = pclib.random_problem(seed, [3, 4, 2], act="linear", bias=False)
    p = [{"W": jnp.zeros_like(params[0]["W"])}, params[1]]
    g = jax.grad(mse)(p, x, y)
    C = np.asarray(y.T @ x) / x.shape[0]
    expected = -np.asarray(params[1]["W"]).T @ C
    assert np.allclose(g[0]["W"], expected, atol=1e-12)
    assert np.abs(expected).max() > 1e-2


@pytest.mark.parametrize("widths", [[3, 4, 5, 2], [3, 4, 3, 4, 2]])
@pytest.mark.parametrize("seed", [0, 1])
def test_hessians_differ_by_syy_kron_g_on_the_subspace_top_layer_zero(widths, seed):
    """Chapter 5, exercise 1: anywhere on W_L = 0 (lower layers arbitrary), F* = L and
    Hess F* - Hess L = -Syy (x) G on the W_L block, zero elsewhere."""
    params, x, y = pclib.random_problem(seed, widths, act="linear", bias=False)
    p = params[:-1] + [{"W": jnp.zeros_like(params[-1]["W"])}]
    assert np.isclose(F_star(p, x, y), mse(p, x, y), rtol=1e-12)
    HL, HF = both_hessians(p, x, y)
    D = HF - HL
    Syy = np.asarray(y.T @ y) / y.shape[0]
    G = np.eye(widths[-2])
    for l in range(1, len(widths) - 2):  # G = I + sum (W_{L-1}...W_l)(W_{L-1}...W_l)^T, from the weights directly
        M = np.eye(widths[-2])
        for k in range(len(widths) - 3, l - 1, -1):
            M = M @ np.asarray(p[k]["W"])
        G = G + M @ M.T
    m = Syy.shape[0] * G.shape[0]
    expected = np.zeros_like(D)
    expected[-m:, -m:] = -np.kron(Syy, G)
    assert np.abs(D - expected).max() < 1e-12
    assert np.abs(np.kron(Syy, G)).max() > 1e-2


# --- dead units and the rank-one probe -----------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_dead_unit_direction_has_exact_negative_curvature(seed, net):
    """If W_L v = 0 and W_{L-1}^T v = 0, then along W_L + t u v^T the loss is flat and
    F*(t) = F*(0) - (t^2/2) mean_i (u^T S^-1 r_i)^2 / (1 + t^2 u^T S^-1 u)."""
    params, x, y = net(seed, [3, 5, 4, 3], act="linear", bias=False)
    rng = np.random.default_rng(seed)
    v = rng.standard_normal(4)
    v /= np.linalg.norm(v)
    Pv = np.eye(4) - np.outer(v, v)
    params = [params[0], {"W": jnp.asarray(Pv) @ params[1]["W"]}, {"W": params[2]["W"] @ jnp.asarray(Pv)}]
    u = rng.standard_normal(3)
    u /= np.linalg.norm(u)
    S = np.asarray(theory.equilibrium_covariance(params))
    r = np.asarray(y - pclib.predict(params, x, act="linear"))
    a = np.linalg.solve(S, r.T).T @ u
    b = u @ np.linalg.solve(S, u)
    F0, L0 = F_star(params, x, y), mse(params, x, y)
    for t in (0.1, 0.7, 3.0):
        p_t = params[:-1] + [{"W": params[2]["W"] + t * jnp.outer(u, v)}]
        assert np.isclose(mse(p_t, x, y), L0, rtol=1e-12)
        expected = F0 - 0.5 * t**2 * np.mean(a**2) / (1 + t**2 * b)
        assert np.isclose(F_star(p_t, x, y), expected, rtol=1e-10)


def _rank_one_saddle(seed, widths, k, n=40):
    """Whitened inputs, noiseless teacher targets, and the balanced rank-one critical point built on
    the teacher's k-th singular direction."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, widths[0])))
    x = q * np.sqrt(n)
    T = rng.standard_normal((widths[-1], widths[0]))
    U, s, Vt = np.linalg.svd(T)
    L = len(widths) - 1
    c = s[k] ** (1 / L)
    params = []
    for l in range(L):
        left = U[:, k] if l == L - 1 else np.eye(widths[l + 1])[0]
        right = Vt[k] if l == 0 else np.eye(widths[l])[0]
        params.append({"W": jnp.asarray(c * np.outer(left, right))})
    return params, jnp.asarray(x), jnp.asarray(x @ T.T)


@pytest.mark.parametrize("widths", [[5, 4, 4, 3], [5, 3, 4, 3, 3], [4, 3, 3, 3, 3, 2]])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rank_one_saddle_non_strict_in_L_strict_in_F(widths, seed):
    params, x, y = _rank_one_saddle(seed, widths, k=0)
    HL, HF, gL, gF = both_hessians(params, x, y, gradients=True)
    assert max(np.abs(gL).max(), np.abs(gF).max()) < 1e-12
    eL, eF = np.linalg.eigvalsh(0.5 * (HL + HL.T)), np.linalg.eigvalsh(0.5 * (HF + HF.T))
    assert eL[0] > -1e-10  # L: no negative curvature at all (a non-strict saddle: L is not minimal here)
    assert mse(params, x, y) > 1e-3
    r = y - pclib.predict(params, x, act="linear")
    Srr = np.asarray(r.T @ r / r.shape[0])
    assert np.isclose(eF[0], -np.linalg.eigvalsh(Srr)[-1], rtol=1e-8)
    assert eF[0] < -1e-2


# --- pclib.landscape ----------------------------------------------------------------------------


def test_hvp_matches_dense_hessian(net):
    params, x, y = net(0, [3, 4, 4, 2], act="tanh")
    fn = lambda p, x, y: pclib.mse_loss(p, x, y, act="tanh")
    H = landscape.hessian(fn, params, x, y)
    hv = landscape.hvp(fn, params, x, y)
    rng = np.random.default_rng(0)
    for _ in range(3):
        v = rng.standard_normal(H.shape[0])
        assert np.allclose(hv(v), H @ v, atol=1e-10)
    with pytest.raises(ValueError, match="flat vector"):
        hv(np.zeros(3))


@pytest.mark.parametrize("which", ["SA", "LA"])
def test_extreme_eigenvalues_match_dense(which, net):
    params, x, y = net(1, [4, 6, 6, 3], act="linear")
    for fn in (mse, F_star):
        dense = landscape.spectrum(fn, params, x, y)
        got = landscape.extreme_eigenvalues(fn, params, x, y, k=2, which=which)
        want = dense[:2] if which == "SA" else dense[-2:]
        assert np.allclose(got, want, atol=1e-7)


def test_extreme_eigenvalues_at_the_origin():
    params, x, y = pclib.random_problem(0, [6, 10, 10, 10, 4], act="linear", bias=False)
    origin = zeros_like_net(params)
    assert np.all(landscape.extreme_eigenvalues(mse, origin, x, y, k=2) == 0.0)
    lam = landscape.extreme_eigenvalues(F_star, origin, x, y, k=1)
    Syy = np.asarray(y.T @ y / y.shape[0])
    assert np.isclose(lam[0], -np.linalg.eigvalsh(Syy)[-1], rtol=1e-7)


def test_landscape_errors():
    params, x, y = pclib.random_problem(0, [3, 4, 2], act="linear")
    with pytest.raises(ValueError, match="which"):
        landscape.extreme_eigenvalues(mse, params, x, y, which="BIG")
    with pytest.raises(ValueError, match="k must be"):
        landscape.extreme_eigenvalues(mse, params, x, y, k=0)
    with pytest.raises(ValueError, match="scalar"):
        landscape.hessian(lambda p, x, y: pclib.predict(p, x, act="linear"), params, x, y)
    with pytest.raises(TypeError, match="fn must be a function"):
        landscape.hessian("mse", params, x, y)


def test_theory_errors():
    params, x, y = pclib.random_problem(0, [3, 4, 4, 2], act="linear", bias=True)
    with pytest.raises(ValueError, match="without biases"):
        theory.zero_rank_energy_curvature(params, y)
    with pytest.raises(ValueError, match="at least one hidden layer"):
        theory.origin_hessians([3, 2], x, y)
    with pytest.raises(ValueError, match="shapes"):
        theory.origin_hessians([3, 4, 4, 5], x, y)
    with pytest.raises(ValueError, match="features"):
        theory.equilibrated_energy(params, x[:, :2], y)
    p1, x1, y1 = pclib.random_problem(0, [3, 2], act="linear", bias=False)
    with pytest.raises(ValueError, match="at least one hidden layer"):
        theory.joint_hessian_schur(p1, x1, y1)


# --- training from near the origin ------------------------------------------------------------


def _escape_losses(method, act, X, Y, seeds, iters, *, widths=(6, 8, 8, 8, 3), scale=5e-3, lr=0.4, opt=None):
    """Full-batch SGD from near the origin for several seeds at once; losses (seeds, iters + 1)."""
    opt = optax.sgd(lr) if opt is None else opt
    step = pclib.make_step(opt, method=method, act=act, steps=50, dt=0.1)
    ps = [pclib.init_mlp(jax.random.key(s), list(widths), bias=False, scale=scale) for s in seeds]
    ps = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *ps)

    def one(p):
        def body(carry, _):
            p, st = carry
            p, st, _ = step(p, st, X, Y)
            return (p, st), pclib.mse_loss(p, X, Y, act=act)

        _, ls = jax.lax.scan(body, (p, opt.init(p)), None, length=iters)
        return jnp.concatenate([pclib.mse_loss(p, X, Y, act=act)[None], ls])

    return np.asarray(jax.jit(jax.vmap(one))(ps))


def _escape_time(losses, frac=0.9):
    """First iteration with loss < frac * initial loss, or the budget (len - 1) if never."""
    below = losses < frac * losses[0]
    return int(np.argmax(below)) if below.any() else len(losses) - 1


@pytest.mark.parametrize("act", ["linear", "tanh", "relu"])
def test_pc_escapes_the_origin_faster_than_bp(act):
    """Near the origin (std 5e-3, three hidden layers of width 8) full-batch SGD on PC leaves the plateau
    (loss < 90% of its start) within 600 iterations and at least 3x sooner than BP, on each of four seeds
    (BP usually not within its 2000-iteration budget, so BP's time is then a lower bound); PC's weight
    gradients at the start are more than 100x larger. ReLU escapes more slowly under PC (about 200-550
    iterations here, against about 60-70 for linear and tanh)."""
    rng = np.random.default_rng(0)
    X = jnp.asarray(rng.standard_normal((128, 6)))
    Y = X @ jnp.asarray(rng.standard_normal((6, 3))) / np.sqrt(6)
    seeds, budget_pc, budget_bp, ratio = [0, 1, 2, 3], 600, 2000, 3
    assert budget_bp >= ratio * budget_pc  # so BP's budget can witness the ratio for every PC time
    ls_pc = _escape_losses("pc", act, X, Y, seeds, budget_pc)
    t_pc = [_escape_time(l) for l in ls_pc]
    t_bp = [_escape_time(l) for l in _escape_losses("bp", act, X, Y, seeds, budget_bp)]
    for tp, tb in zip(t_pc, t_bp):
        assert tp < budget_pc and tb >= ratio * tp, (act, t_pc, t_bp)
    if act != "relu":  # the staircase: PC's loss lingers near the best rank-2 loss (reduced-rank regression)
        x, y = np.asarray(X), np.asarray(Y)
        w, V = np.linalg.eigh(x.T @ x / len(x))
        sig = np.linalg.svd((y.T @ x / len(x)) @ V @ np.diag(w**-0.5) @ V.T, compute_uv=False)
        L0, L2 = 0.5 * np.trace(y.T @ y / len(y)), 0.5 * (np.trace(y.T @ y / len(y)) - np.sum(sig[:2] ** 2))
        assert np.isclose(ls_pc[0, 0], L0, rtol=1e-3)  # L at the (nearly zero) start
        assert all(np.sum(np.abs(l - L2) < 0.02 * L0) >= 20 for l in ls_pc), act
    for s in seeds:
        params = pclib.init_mlp(jax.random.key(s), [6, 8, 8, 8, 3], bias=False, scale=5e-3)
        g_bp = landscape.flatten(pclib.bp_grads(params, X, Y, act=act))[0]
        star = pclib.infer(params, X, Y, act=act, steps=50, dt=0.1).activities
        g_pc = landscape.flatten(pclib.pc_grads(params, star, act=act))[0]
        assert np.linalg.norm(g_pc) > 100 * np.linalg.norm(g_bp), (act, s)


@pytest.mark.parametrize("seed", [0, 1])
def test_origin_with_precisions(seed):
    """Chapter 5, exercise 2: lambda_min(Hess F*(0)) = -(pi_L^2 / pi_{L-1}) lambda_max(Syy) for H >= 2."""
    params, x, y = pclib.random_problem(seed, [4, 5, 5, 3], act="linear", bias=False)
    pi = jnp.exp(jax.random.normal(jax.random.key(seed), (3,)))
    lam = landscape.spectrum(theory.equilibrated_energy, zeros_like_net(params), x, y, precisions=pi)[0]
    Syy = np.asarray(y.T @ y) / len(y)
    assert np.isclose(lam, -(pi[2] ** 2 / pi[1]) * np.linalg.eigvalsh(Syy)[-1], rtol=1e-10)


def test_hessian_matches_flat_jax_hessian_with_biases(net):
    """The Hessian follows landscape.flatten's order (W then b, layer by layer); landscape.hessians gives the same
    Hessian and the flat gradient."""
    params, x, y = net(2, [3, 4, 2], act="tanh")
    fn = lambda p, x, y: pclib.mse_loss(p, x, y, act="tanh")
    flat, unflatten = landscape.flatten(params)
    expected = jax.hessian(lambda w: fn(unflatten(w), x, y))(flat)
    assert np.allclose(landscape.hessian(fn, params, x, y), expected, atol=1e-12)
    (H,), (g,) = landscape.hessians((fn,), params, x, y, gradients=True)  # the same compiled program
    assert np.allclose(H, expected, atol=1e-12)
    assert np.allclose(g, jax.grad(lambda w: fn(unflatten(w), x, y))(flat), atol=1e-12)
    with pytest.raises(TypeError, match="sequence of functions"):
        landscape.hessians(fn, params, x, y)


# --- Hessians of an actual equilibrium (not the closed form of Theorem 1) ------------------------


def F_at_linear_equilibrium(p, x, y):
    """The energy at the equilibrium found by a linear solve of dF/dz = 0 (pclib.theory.linear_equilibrium)."""
    return pclib.energy(p, theory.linear_equilibrium(p, x, y), act="linear")


def F_after_unrolled_inference(p, x, y, steps=400):
    """The energy after `steps` Euler steps of pclib.infer, differentiated through the unrolled steps."""
    lam = jnp.linalg.eigvalsh(theory.linear_activity_hessian(jax.lax.stop_gradient(p)))
    res = pclib.infer(p, x, y, act="linear", steps=steps, dt=1.0 / lam[-1], check=False)
    return pclib.energy(p, res.activities, act="linear")


@pytest.mark.parametrize("widths", [[3, 4, 2], [3, 4, 4, 2]])
def test_origin_hessian_of_an_actual_equilibrium(widths, net):
    """Theorem 2 against Hessians that never use the closed form: autodiff through the linear solve for z*
    and the Schur complement of the joint (weights, activities) Hessian."""
    params, x, y = net(0, widths, act="linear", bias=False)
    origin = zeros_like_net(params)
    _, HF_th = theory.origin_hessians(widths, x, y)
    assert np.abs(landscape.hessian(F_at_linear_equilibrium, origin, x, y) - HF_th).max() < 1e-10
    H_fixed, H_schur = theory.joint_hessian_schur(origin, x, y)
    assert np.abs(H_schur - HF_th).max() < 1e-10
    # all negative curvature comes from inference: at fixed activities the Hessian is PSD with lambda_min = 0
    lam_fixed = np.linalg.eigvalsh(np.asarray(H_fixed))
    assert lam_fixed[0] > -1e-12 and abs(lam_fixed[0]) < 1e-12
    Syy = np.asarray(y.T @ y) / y.shape[0]
    if len(widths) >= 4:
        assert np.isclose(np.linalg.eigvalsh(np.asarray(H_schur))[0], -np.linalg.eigvalsh(Syy)[-1], rtol=1e-10)


@pytest.mark.parametrize("seed", [0, 1])
def test_hessians_of_actual_equilibria_at_random_points(seed, net):
    """Away from the origin: the closed-form Hessian, autodiff through the linear solve, the Schur complement
    and 400 unrolled inference steps all agree."""
    params, x, y = net(seed, [3, 4, 3, 2], act="linear", bias=False)
    params = jax.tree_util.tree_map(lambda w: 0.5 * w, params)
    H_closed = np.asarray(landscape.hessian(F_star, params, x, y))
    H_solve = np.asarray(landscape.hessian(F_at_linear_equilibrium, params, x, y))
    _, H_schur = theory.joint_hessian_schur(params, x, y)
    H_unrolled = np.asarray(landscape.hessian(F_after_unrolled_inference, params, x, y))
    scale = np.abs(H_closed).max()
    assert np.abs(H_solve - H_closed).max() < 1e-10 * scale
    assert np.abs(np.asarray(H_schur) - H_closed).max() < 1e-10 * scale
    assert np.abs(H_unrolled - H_closed).max() < 1e-6 * scale


@pytest.mark.parametrize("widths", [[3, 4, 4, 2]])
def test_zero_rank_and_rank_one_saddles_of_an_actual_equilibrium(widths, net):
    params, x, y = net(1, widths, act="linear", bias=False)
    p = [layer if i == 1 else {"W": jnp.zeros_like(layer["W"])} for i, layer in enumerate(params)]
    D = np.asarray(landscape.hessian(F_at_linear_equilibrium, p, x, y) - landscape.hessian(mse, p, x, y))
    K = np.asarray(theory.zero_rank_energy_curvature(p, y))
    m = K.shape[0]
    assert np.abs(D[-m:, -m:] - K).max() < 1e-10 and np.abs(D[:-m]).max() < 1e-10
    p1, x1, y1 = _rank_one_saddle(0, widths, k=0)
    eF = np.linalg.eigvalsh(np.asarray(landscape.hessian(F_at_linear_equilibrium, p1, x1, y1)))
    r = y1 - pclib.predict(p1, x1, act="linear")
    assert np.isclose(eF[0], -np.linalg.eigvalsh(np.asarray(r.T @ r) / r.shape[0])[-1], rtol=1e-8)


# --- the explaining-away valley -----------------------------------------------------------------


@pytest.mark.parametrize("widths", [[4, 3, 6, 5], [3, 2, 2, 3, 4], [4] + [5] * 6 + [3]])
@pytest.mark.parametrize("seed", [0, 1])
def test_explaining_away_valley(widths, seed, net):
    """Lower layers zero, W_L = tA: L stays at tr(Syy)/2, F* = (1/2) sum_k u_k^T Syy u_k / (1 + t^2 s_k^2)
    decreases to (1/2) tr(Syy Pi_perp), and for H >= 2 the lower layers' gradient of F* is exactly zero."""
    params, x, y = net(seed, widths, act="linear", bias=False)
    A = np.asarray(params[-1]["W"])
    Syy = np.asarray(y.T @ y) / y.shape[0]
    U, s, _ = np.linalg.svd(A)
    rank = int(np.sum(s > 1e-12))
    Pi_perp = U[:, rank:] @ U[:, rank:].T
    values = []
    for t in (0.0, 0.5, 2.0, 10.0, 1e4):
        p = zeros_like_net(params)[:-1] + [{"W": jnp.asarray(t * A)}]
        assert np.isclose(mse(p, x, y), 0.5 * np.trace(Syy), rtol=1e-12)
        # independent: energy after exact inference on a generic data set, vs the eigen-formula
        F_eq = float(pclib.energy(p, theory.linear_equilibrium(p, x, y), act="linear"))
        formula = 0.5 * sum(U[:, k] @ Syy @ U[:, k] / (1 + t**2 * (s[k] ** 2 if k < s.size else 0.0))
                            for k in range(A.shape[0]))
        assert np.isclose(F_eq, formula, rtol=1e-9, atol=1e-12)
        assert np.isclose(theory.explaining_away_energy(t * A, y), formula, rtol=1e-9, atol=1e-12)
        values.append(F_eq)
        g = jax.grad(F_star)(p, x, y)
        if len(widths) >= 4:  # H >= 2
            assert max(np.abs(np.asarray(l["W"])).max() for l in g[:-1]) == 0.0
    assert all(a > b for a, b in zip(values, values[1:]))
    # the limit: 0 <= F*(t) - tr(Syy Pi_perp)/2 <= tr(Syy)/2 / (1 + t^2 s_min^2), s_min the smallest non-zero s_k
    gap = values[-1] - 0.5 * np.trace(Syy @ Pi_perp)
    assert -1e-12 <= gap <= 0.5 * np.trace(Syy) / (1 + 1e8 * s[rank - 1] ** 2) + 1e-12
    if widths[-2] >= widths[-1]:  # A has full row rank: F* -> 0 while L stays at its value at the origin
        assert rank == widths[-1] and values[-1] < 1e-5 * values[0]


def test_explaining_away_energy_errors():
    with pytest.raises(ValueError, match="top weight matrix"):
        theory.explaining_away_energy(np.zeros((3, 2)), np.zeros((5, 2)))


# --- Lanczos where it has work to do --------------------------------------------------------------


def test_lanczos_on_the_loss_at_a_one_hidden_layer_origin():
    """H = 1: L's Hessian at the origin is not zero (eigenvalues +-sigma_k(C), Theorem 2 (1)), so the
    zero-Hessian shortcut does not apply and Lanczos must find -sigma_1(C) and +sigma_1(C)."""
    params, x, y = pclib.random_problem(0, [12, 30, 6], act="linear", bias=False)
    origin = zeros_like_net(params)
    hv = landscape.hvp(mse, origin, x, y)
    assert np.any(np.asarray(hv(np.random.default_rng(0).standard_normal(12 * 30 + 30 * 6))))
    C = np.asarray(y.T @ x) / x.shape[0]
    sigma = np.linalg.svd(C, compute_uv=False)
    lo = landscape.extreme_eigenvalues(mse, origin, x, y, k=2, which="SA")
    hi = landscape.extreme_eigenvalues(mse, origin, x, y, k=1, which="LA")
    assert np.allclose(lo, [-sigma[0], -sigma[0]], rtol=1e-7)  # each sigma_k has multiplicity d_1 = 30
    assert np.isclose(hi[0], sigma[0], rtol=1e-7)


def test_lanczos_eigenvectors_at_a_random_point(net):
    params, x, y = net(3, [4, 6, 6, 3], act="linear")
    H = np.asarray(landscape.hessian(F_star, params, x, y))
    vals, vecs = landscape.extreme_eigenvalues(F_star, params, x, y, k=1, which="SA", return_eigenvectors=True)
    assert np.isclose(vals[0], np.linalg.eigvalsh(H)[0], atol=1e-8)
    assert np.allclose(H @ vecs[:, 0], vals[0] * vecs[:, 0], atol=1e-6)


# --- per-layer gradients, escape estimate and depth ---------------------------------------------------


def _teacher_data(n=128, d_in=6, d_out=3, seed=0):
    rng = np.random.default_rng(seed)
    X = jnp.asarray(rng.standard_normal((n, d_in)))
    return X, X @ jnp.asarray(rng.standard_normal((d_in, d_out))) / np.sqrt(d_in)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_per_layer_gradients_near_the_origin(seed):
    """Only PC's top-layer gradient is large: it equals -Syy W_L to first order (the Hessian of Theorem 2
    applied to W_L), while the lower layers' PC gradients are of backprop's size (within a factor 3; they
    differ at O(1) because the equilibrium activities pick up errors of the same order as the tiny
    feedforward activities)."""
    X, Y = _teacher_data()
    params = pclib.init_mlp(jax.random.key(seed), [6, 8, 8, 8, 3], bias=False, scale=5e-3)
    star = theory.linear_equilibrium(params, X, Y)
    g_pc, g_bp = pclib.pc_grads(params, star, act="linear"), pclib.bp_grads(params, X, Y, act="linear")
    Syy = np.asarray(Y.T @ Y) / Y.shape[0]
    expected_top = -Syy @ np.asarray(params[-1]["W"])
    assert np.linalg.norm(np.asarray(g_pc[-1]["W"]) - expected_top) < 1e-3 * np.linalg.norm(expected_top)
    pc_norms, bp_norms = escape.layer_norms(g_pc), escape.layer_norms(g_bp)
    assert np.all(np.abs(np.log10(pc_norms[:-1] / bp_norms[:-1])) < 0.5), (pc_norms, bp_norms)
    assert pc_norms[-1] > 100 * bp_norms[-1]


def test_per_layer_gradients_near_the_origin_tanh_at_equilibrium_and_relu_truncated():
    """tanh: at a certified equilibrium (Euler, dt 0.5, to max |dF_i/dz| < 1e-10) PC's lower-layer gradients are within a
    factor 3 of backprop's and its top layer's more than 100 times larger, as after 50 Euler steps of dt 0.1.
    ReLU: Euler inference (dt 0.5) does not reach max |dF_i/dz| < 1e-10 within 2,000 steps (it stalls at the kinks),
    and the 50-step top-layer gradient is still more than 100 times backprop's."""
    X, Y = _teacher_data()
    for seed in range(3):
        params = pclib.init_mlp(jax.random.key(seed), [6, 8, 8, 8, 3], bias=False, scale=5e-3)
        bp_norms = escape.layer_norms(pclib.bp_grads(params, X, Y, act="tanh"))
        g50 = pclib.pc_grads(params, pclib.infer(params, X, Y, act="tanh", steps=50, dt=0.1).activities, act="tanh")
        eq = pclib.infer(params, X, Y, act="tanh", tol=1e-10, max_steps=2000, dt=0.5)  # raises if not converged
        g_eq = pclib.pc_grads(params, eq.activities, act="tanh")
        for g in (g50, g_eq):
            norms = escape.layer_norms(g)
            assert np.all(np.abs(np.log10(norms[:-1] / bp_norms[:-1])) < 0.5), (seed, norms, bp_norms)
            assert norms[-1] > 100 * bp_norms[-1]
        relu = pclib.infer(params, X, Y, act="relu", tol=1e-10, max_steps=2000, dt=0.5, check=False)
        assert not bool(relu.converged) and float(relu.residual) > 1e-8
        g50 = pclib.pc_grads(params, pclib.infer(params, X, Y, act="relu", steps=50, dt=0.1).activities, act="relu")
        relu_bp = escape.layer_norms(pclib.bp_grads(params, X, Y, act="relu"))
        assert escape.layer_norms(g50)[-1] > 100 * relu_bp[-1]


def test_escape_estimate_for_the_energy():
    """Full-batch GD on F* from std sigma: the top layer grows by 1 + eta lambda_max(Syy) per step, so F*
    first drops by 10% within a factor 2 of log(1/sigma) / log(1 + eta lambda)."""
    X, Y = _teacher_data()
    sigma, eta = 5e-3, 0.4
    lam = np.linalg.eigvalsh(np.asarray(Y.T @ Y) / Y.shape[0])[-1]
    k_est = np.log(1 / sigma) / np.log(1 + eta * lam)
    for seed in range(3):
        p = pclib.init_mlp(jax.random.key(seed), [6, 8, 8, 8, 3], bias=False, scale=sigma)
        F = [float(F_star(p, X, Y))]
        for _ in range(int(3 * k_est)):
            p = jax.tree_util.tree_map(lambda w, g: w - eta * g, p, jax.grad(F_star)(p, X, Y))
            F.append(float(F_star(p, X, Y)))
        assert k_est / 2 <= escape.escape_time(np.array(F)) <= 2 * k_est


def test_pc_escape_slows_with_depth_and_bp_leads_at_matched_step_length():
    """Plain SGD (lr 0.4): PC's escape time grows with depth over H = 1, 2, 3 on every seed. Matched step
    length (normalised SGD, 0.02): BP leaves the origin no later than PC at H = 3, on every seed."""
    X, Y = _teacher_data()
    seeds = [0, 1, 2]
    times = {}
    for H in (1, 2, 3):
        ls = _escape_losses("pc", "linear", X, Y, seeds, 200, widths=(6,) + (8,) * H + (3,))
        times[H] = [escape.escape_time(l) for l in ls]
    assert max(times[3]) < 200
    assert min(times[2]) > max(times[1]) and min(times[3]) > max(times[2]), times
    opt = escape.normalized_sgd(0.02)
    t_pc = [escape.escape_time(l) for l in _escape_losses("pc", "linear", X, Y, seeds, 400, opt=opt)]
    t_bp = [escape.escape_time(l) for l in _escape_losses("bp", "linear", X, Y, seeds, 400, opt=opt)]
    assert all(b <= p for b, p in zip(t_bp, t_pc)), (t_bp, t_pc)
    assert max(t_bp) < 400


def test_escape_helpers():
    g = [{"W": jnp.array([[3.0, 4.0]])}]
    opt = escape.normalized_sgd(0.3)
    upd, _ = opt.update(g, opt.init(g))
    assert np.allclose(upd[0]["W"], [[-0.18, -0.24]])
    zero, _ = escape.normalize_updates().update([{"W": jnp.zeros((1, 2))}], optax.EmptyState())
    assert np.all(zero[0]["W"] == 0.0)  # a zero gradient stays zero (no 0/0)
    assert escape.escape_time(np.array([1.0, 0.95, 0.89, 0.5])) == 2
    assert escape.escape_time(np.array([1.0, 0.95, 0.95])) == 2  # never: the budget
    with pytest.raises(ValueError, match="step_length"):
        escape.normalized_sgd(0.0)
    with pytest.raises(ValueError, match="frac"):
        escape.escape_time(np.ones(3), frac=1.5)
    with pytest.raises(ValueError, match="layer dicts"):
        escape.layer_norms({"W": 1})


def test_restart_from_the_rank_one_saddle():
    """Matrix-completion-style restart: from the rank-one saddle plus noise (std 1e-3), gradient descent on F*
    (PC at converged inference) leaves it (L < 90% of its value) within 300 steps, backprop does not within
    1500: L's Hessian there is PSD (non-strict), F*'s has -lambda_max(Srr) < 0."""
    widths = [6, 4, 4, 3]
    p_sad, x, y = _rank_one_saddle(0, widths, k=0)

    def gd(fn, p, iters, lr=0.05):
        def body(p, _):
            p = jax.tree_util.tree_map(lambda w, g: w - lr * g, p, jax.grad(fn)(p, x, y))
            return p, mse(p, x, y)

        return np.concatenate([[float(mse(p, x, y))], np.asarray(jax.jit(lambda q: jax.lax.scan(body, q, None, length=iters)[1])(p))])

    for seed in range(3):
        p0 = jax.tree_util.tree_map(jnp.add, p_sad, pclib.init_mlp(jax.random.key(seed), widths, bias=False, scale=1e-3))
        assert escape.escape_time(gd(F_star, p0, 300)) < 300
        assert escape.escape_time(gd(mse, p0, 1500)) == 1500


def test_lanczos_eigenvector_slice_at_the_origin():
    """The Lanczos eigenvector for lambda_min of Hess F*(0) lies in the top layer: along it L is constant,
    and F* follows the explaining-away formula with curvature -lambda_max(Syy)."""
    params, x, y = pclib.random_problem(0, [4, 12, 12, 3], act="linear", bias=False)
    origin = zeros_like_net(params)
    lam, vec = landscape.extreme_eigenvalues(F_star, origin, x, y, k=1, which="SA", return_eigenvectors=True)
    flat, unflat = landscape.flatten(origin)
    v = jnp.asarray(vec[:, 0])
    m = 3 * 12
    assert np.abs(np.asarray(v[:-m])).max() < 1e-8  # only W_L entries
    Syy = np.asarray(y.T @ y) / y.shape[0]
    assert np.isclose(lam[0], -np.linalg.eigvalsh(Syy)[-1], rtol=1e-8)
    for a in (1e-3, 0.5, 2.0):
        p = unflat(flat + a * v)
        assert np.isclose(mse(p, x, y), mse(origin, x, y), rtol=1e-13)
        assert np.isclose(F_star(p, x, y), theory.explaining_away_energy(p[-1]["W"], y), rtol=1e-10)
    F0 = float(F_star(origin, x, y))
    assert np.isclose((float(F_star(unflat(flat + 1e-3 * v), x, y)) - F0) / 0.5e-6, lam[0], rtol=1e-4)


# --- real MNIST digits (pclib.data "mnist5k", offline) --------------------------------------------


@pytest.fixture(scope="module")
def mnist():
    ds = pclib.data.get("mnist5k")
    return (ds.x_train - 0.1307) / 0.3081, ds.y_train  # the paper's normalisation, one-hot targets


@pytest.mark.parametrize("widths", [[784, 10, 10], [784, 10, 10, 10]])
def test_mnist_origin_hessians_by_products_and_lanczos(widths, mnist):
    """Theorem 2 on 256 real MNIST digits at the paper's widths, without a dense Hessian: autodiff Hessian-vector
    products of L and F* at the origin equal theory.origin_hvp's on random vectors, and Lanczos finds the smallest
    eigenvalue of theory.origin_spectra."""
    x, y = jnp.asarray(mnist[0][:256], jnp.float64), jnp.asarray(mnist[1][:256], jnp.float64)
    origin = [{"W": jnp.zeros((b, a))} for a, b in zip(widths[:-1], widths[1:])]
    theorem = theory.origin_hvp(widths, x, y)
    hv = [landscape.hvp(fn, origin, x, y) for fn in (mse, F_star)]
    for v in np.random.default_rng(0).standard_normal((2, sum(a * b for a, b in zip(widths[:-1], widths[1:])))):
        for h, t in zip(hv, theorem(v)):
            assert np.linalg.norm(np.asarray(h(v)) - t) < 1e-10 * np.linalg.norm(v)
    sL, sF = theory.origin_spectra(widths, x, y)
    lam = landscape.extreme_eigenvalues(F_star, origin, x, y, k=1, which="SA")[0]
    assert np.isclose(lam, sF[0], rtol=1e-8) and sF[0] < -0.05
    if len(widths) >= 4:  # the class frequencies: Syy is diagonal for one-hot targets
        assert np.isclose(sF[0], -np.asarray(y).mean(0).max(), rtol=1e-10) and np.all(sL == 0)


def test_mnist_matched_step_length_escape(mnist):
    """Four hidden layers of width 16 on 4,000 real MNIST digits, normalised SGD (step lengths 0.02 and 0.1), three
    seeds, 300 minibatches of 64, float32; PC at converged inference (the gradient of F*), BP on L; L on 256 digits.
    At 0.1 every PC run gets L below 80% of its start and no BP run does; at 0.02 no run of either does, while PC's
    F* falls below 40% of its start (the explaining-away valley); at the better of the two lengths PC ends lower."""
    x, y = jnp.asarray(mnist[0], jnp.float32), jnp.asarray(mnist[1], jnp.float32)
    xe, ye, iters, seeds, lrs = x[:256], y[:256], 300, (0, 1, 2), (0.02, 0.1)
    widths = [784, 16, 16, 16, 16, 10]
    idx = jnp.asarray(np.stack([[np.random.default_rng([s, t]).choice(x.shape[0], 64, replace=False)
                                 for t in range(iters)] for s in seeds]))
    p0 = [pclib.init_mlp(jax.random.key(s), widths, bias=False, scale=5e-3) for s in seeds]
    p0 = jax.tree_util.tree_map(lambda *a: jnp.stack(a).astype(jnp.float32), *p0)

    def runs(fn):
        def one(lr, p, idx_s):
            opt = optax.chain(escape.normalize_updates(), optax.sgd(lr))

            def body(carry, i):
                p, st = carry
                u, st = opt.update(jax.grad(fn)(p, x[i], y[i]), st, p)
                p = optax.apply_updates(p, u)
                return (p, st), mse(p, xe, ye)

            (last, _), ls = jax.lax.scan(body, (p, opt.init(p)), idx_s)
            return jnp.concatenate([mse(p, xe, ye)[None], ls]), F_star(last, xe, ye) / F_star(p, xe, ye)

        f = jax.jit(jax.vmap(jax.vmap(one, in_axes=(None, 0, 0)), in_axes=(0, None, None)))
        return (np.asarray(a) for a in f(jnp.asarray(lrs, jnp.float32), p0, idx))

    (L_pc, F_ratio), (L_bp, _) = runs(F_star), runs(mse)
    t80 = lambda ls: np.array([[escape.escape_time(l, frac=0.8) for l in row] for row in ls])  # noqa: E731
    assert np.all(t80(L_pc)[1] < iters) and np.all(t80(L_bp) == iters) and np.all(t80(L_pc)[0] == iters)
    assert np.all(F_ratio[0] < 0.4)
    best_pc, best_bp = L_pc[:, :, -1].mean(1).argmin(), L_bp[:, :, -1].mean(1).argmin()
    assert np.all(L_pc[best_pc, :, -1] < 0.9 * L_bp[best_bp, :, -1])
