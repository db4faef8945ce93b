"""Chapter 4's claims: the toy landscape, the Fisher/trust-region view of inference, the
learning-rate search. Expected values come from closed forms (derived in the chapter and
written independently of the iterative code), jax.hessian, or pclib.theory.linear_equilibrium."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import pclib
from pclib.theory import toy
from pclib import learning, theory
from conftest import random_net


def toy_data(seed, n=3):
    """Random scalar data with a clear correlation a = mean(x y) (so the origin is a strict saddle)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    y = rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 2.0) * x + 0.3 * rng.normal(size=n)
    return jnp.asarray(x), jnp.asarray(y)


# --- the toy network f(x) = w2 w1 x -------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_toy_equilibrated_energy_closed_form_matches_inference(seed):
    x, y = toy_data(seed)
    w = jnp.asarray(np.random.default_rng(seed + 50).uniform(-2, 2, size=2))
    dt = 0.5 / (1 + float(w[1]) ** 2)
    iterative = toy.toy_energy_after(w, x, y, steps=3000, dt=dt)
    closed = toy.toy_equilibrated_energy(w, x, y)
    assert abs(float(iterative - closed)) < 1e-10 * max(1.0, float(closed))
    # and the same value from the general linear closed form of chapter 1
    params = toy.toy_params(w[0], w[1])
    star = theory.linear_equilibrium(params, x[:, None], y[:, None])
    assert abs(float(pclib.energy(params, star, act="linear") - closed)) < 1e-12


@pytest.mark.parametrize("seed", range(4))
def test_toy_energy_starts_at_loss_and_flattens_with_inference(seed):
    x, y = toy_data(seed)
    w1s, w2s = jnp.linspace(-2, 2, 9), jnp.linspace(-2, 2, 7)
    L = toy.loss_grid(x, y, w1s, w2s)
    W1, W2 = np.meshgrid(np.asarray(w1s), np.asarray(w2s))
    assert np.allclose(L, 0.5 * np.mean((np.asarray(y) - (W1 * W2)[..., None] * np.asarray(x)) ** 2, -1), atol=1e-12)
    grids = [toy.energy_grid(x, y, w1s, w2s, steps=k, dt=0.1) for k in (0, 1, 5, 20, 100)]
    Fstar = toy.energy_grid(x, y, w1s, w2s)
    assert np.allclose(grids[0], L, atol=1e-12)
    for a, b in zip(grids, grids[1:]):
        assert np.all(np.asarray(b) <= np.asarray(a) + 1e-12)  # pointwise non-increasing in inference time
    assert np.all(np.asarray(grids[-1]) >= np.asarray(Fstar) - 1e-12)
    assert np.allclose(Fstar, L / (1 + W2**2), atol=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_pc_weight_gradient_at_equilibrium_is_gradient_of_F_star(seed):
    """Envelope theorem: dF/dw at the equilibrium activities = the gradient of the closed-form F*."""
    x, y = toy_data(seed)
    w = jnp.asarray(np.random.default_rng(seed + 7).uniform(-1.5, 1.5, size=2))
    params = toy.toy_params(w[0], w[1])
    star = theory.linear_equilibrium(params, x[:, None], y[:, None])
    g_pc = pclib.pc_grads(params, star, act="linear")
    g_closed = jax.grad(toy.toy_equilibrated_energy)(w, x, y)
    assert np.allclose([g_pc[0]["W"][0, 0], g_pc[1]["W"][0, 0]], g_closed, atol=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_saddle_hessians_and_curvatures(seed):
    """At the origin: H_L = [[0, -a], [-a, 0]], H_F* = [[0, -a], [-a, -b]] with a = mean(xy), b = mean(y^2);
    F*'s escape curvature is more negative and its trap curvature flatter than L's."""
    x, y = toy_data(seed)
    a, b = float(jnp.mean(x * y)), float(jnp.mean(y**2))
    HL = jax.hessian(toy.toy_loss)(jnp.zeros(2), x, y)
    HF = jax.hessian(toy.toy_equilibrated_energy)(jnp.zeros(2), x, y)
    assert np.allclose(HL, [[0, -a], [-a, 0]], atol=1e-12)
    assert np.allclose(HF, [[0, -a], [-a, -b]], atol=1e-12)
    lL, lF = np.linalg.eigvalsh(HL), np.linalg.eigvalsh(HF)
    assert np.allclose(lF, [-(b + np.hypot(b, 2 * a)) / 2, (np.hypot(b, 2 * a) - b) / 2], atol=1e-12)
    assert lF[0] < lL[0] < 0 < lF[1] < lL[1]
    assert np.allclose(jax.grad(toy.toy_loss)(jnp.zeros(2), x, y), 0) and np.allclose(jax.grad(toy.toy_equilibrated_energy)(jnp.zeros(2), x, y), 0)


@pytest.mark.parametrize("seed", range(4))
def test_pc_escapes_saddle_first_from_small_inits(seed):
    """From 200 random starts at radius 1e-3, GD on F* leaves the ball of radius 0.5 first in >= 99% of them,
    and the median step counts are near the linearised prediction log(R/r) / log(1 + lr |lambda_min|)."""
    x, y = toy_data(seed)
    rng = np.random.default_rng(seed)
    ang = rng.uniform(0, 2 * np.pi, 200)
    inits = 1e-3 * np.stack([np.cos(ang), np.sin(ang)], 1)
    lr = 0.1
    s_L = toy.escape_steps(lambda w: toy.toy_loss(w, x, y), inits, lr=lr, radius=0.5, max_steps=4000)
    s_F = toy.escape_steps(lambda w: toy.toy_equilibrated_energy(w, x, y), inits, lr=lr, radius=0.5, max_steps=4000)
    assert s_L.max() <= 4000 and s_F.max() <= 4000
    assert np.mean(s_F < s_L) >= 0.99
    wider = 1e-2 * np.stack([np.cos(ang), np.sin(ang)], 1)  # the chapter's printed case: r = 0.01, >= 90%
    s_L2 = toy.escape_steps(lambda w: toy.toy_loss(w, x, y), wider, lr=lr, radius=0.5, max_steps=4000)
    s_F2 = toy.escape_steps(lambda w: toy.toy_equilibrated_energy(w, x, y), wider, lr=lr, radius=0.5, max_steps=4000)
    assert np.mean(s_F2 < s_L2) >= 0.9
    a, b = abs(float(jnp.mean(x * y))), float(jnp.mean(y**2))
    rate_L, rate_F = np.log(1 + lr * a), np.log(1 + lr * (b + np.hypot(b, 2 * a)) / 2)
    assert np.median(s_F) / np.median(s_L) < 1.0
    assert np.median(s_F) / np.median(s_L) == pytest.approx(rate_L / rate_F, rel=0.35)


def test_gd_path_and_grids_agree_with_autodiff():
    x, y = toy_data(0)
    fn = lambda w: toy.toy_equilibrated_energy(w, x, y)
    path = toy.gd_path(fn, jnp.array([0.3, -0.2]), lr=0.05, steps=3)
    w = jnp.array([0.3, -0.2])
    for k in range(3):
        w = w - 0.05 * jax.grad(fn)(w)
        assert np.allclose(path[k + 1], w, atol=1e-14)
    w1s, w2s = jnp.array([-1.0, 0.5]), jnp.array([0.2, 0.7, 1.1])
    G = toy.gradient_grid(fn, w1s, w2s)
    assert G.shape == (3, 2, 2)
    assert np.allclose(G[2, 0], jax.grad(fn)(jnp.array([-1.0, 1.1])), atol=1e-14)


# --- Fisher information and the trust-region step -----------------------------------------------


@pytest.mark.parametrize("seed,act", [(s, a) for s in range(3) for a in ("linear", "tanh", "relu")])
def test_fisher_equals_energy_hessian_at_feedforward_values(seed, act):
    """With a linear output layer, I(z_hat) = the Hessian of a sample's energy in the hidden activities."""
    params, x, y = random_net(seed, [3, 5, 4, 2], act=act, n=4)
    I = theory.fisher_information(params, x, act=act)
    ff = pclib.forward(params, x, act=act)
    for i in range(2):
        def F1(flat):
            return pclib.energy(params, [x[i:i + 1], flat[None, :5], flat[None, 5:], y[i:i + 1]], act=act)

        H = jax.hessian(F1)(jnp.concatenate([ff[1][i], ff[2][i]]))
        assert np.allclose(H, I[i], atol=1e-10)
    assert np.allclose(I, np.swapaxes(I, 1, 2)) and np.linalg.eigvalsh(np.asarray(I)).min() > 0  # positive definite


@pytest.mark.parametrize("seed", range(3))
def test_fisher_is_gauss_newton_not_hessian_with_nonlinear_output(seed):
    """With a tanh output, the Hessian at z_hat has an extra term weighted by the output error; it vanishes
    when y = y_hat, where I equals the Hessian again."""
    params, x, _ = random_net(seed, [3, 4, 2], act="tanh", n=2)
    I = theory.fisher_information(params, x, act="tanh", out_act="tanh")
    ff = pclib.forward(params, x, act="tanh", out_act="tanh")

    def hess(y_i):
        return jax.hessian(lambda z: pclib.energy(params, [x[:1], z[None], y_i[None]], act="tanh", out_act="tanh"))(ff[1][0])

    assert np.allclose(hess(ff[2][0]), I[0], atol=1e-10)
    assert np.abs(hess(ff[2][0] + 1.0) - I[0]).max() > 1e-3


@pytest.mark.parametrize("seed", range(4))
def test_natural_gradient_step_is_exact_for_linear_nets(seed):
    params, x, y = random_net(seed, [4, 6, 5, 3], act="linear")
    dz = theory.natural_gradient_step(params, x, y, act="linear")
    star = theory.linear_equilibrium(params, x, y)
    ff = pclib.forward(params, x, act="linear")
    assert float(theory.relative_error(dz, [s - f for s, f in zip(star[1:-1], ff[1:-1])])) < 1e-9
    # the quadratic model's minimum is F*, and BP + TR is the PC gradient at equilibrium
    assert abs(float(theory.trust_region_energy(params, x, y, act="linear") - pclib.energy(params, star, act="linear"))) < 1e-10
    d = theory.trust_region_decomposition(params, x, y, act="linear")
    assert float(theory.relative_error(d["approx"], pclib.pc_grads(params, star, act="linear"))) < 1e-9
    assert float(theory.relative_error(d["bp"], pclib.bp_grads(params, x, y, act="linear"))) < 1e-12


def _nonlinear_errors(seed, s):
    """Relative errors of the natural-gradient step and of BP + TR against iterative inference, for a tanh
    net whose targets sit at distance s from its outputs."""
    params, x, _ = random_net(seed, [4, 8, 8, 3], act="tanh", n=8)
    ff = pclib.forward(params, x)
    u = jax.random.normal(jax.random.key(seed + 100), ff[-1].shape)
    y = ff[-1] + s * u / jnp.linalg.norm(u, axis=1, keepdims=True)
    z_star = theory.equilibrium(params, x, y, tol=1e-10)  # certified, or it raises
    dz = theory.natural_gradient_step(params, x, y)
    d = theory.trust_region_decomposition(params, x, y)
    pc = pclib.pc_grads(params, z_star)
    return (float(theory.relative_error(dz, [z - f for z, f in zip(z_star[1:-1], ff[1:-1])])),
            float(theory.relative_error(d["approx"], pc)), float(theory.tree_cosine(d["approx"], pc)),
            float(theory.tree_cosine(d["bp"], pc)))


@pytest.mark.parametrize("seed", range(3))
def test_natural_gradient_error_is_first_order_in_output_error(seed):
    small, smaller = _nonlinear_errors(seed, 1e-2), _nonlinear_errors(seed, 1e-3)
    assert small[0] < 1e-2 and small[1] < 1e-2  # the chapter's printed tolerance
    slope_nat = np.log10(small[0] / smaller[0])
    slope_tr = np.log10(small[1] / smaller[1])
    assert 0.9 < slope_nat < 1.1 and 0.8 < slope_tr < 1.2
    large = _nonlinear_errors(seed, 1.0)
    assert large[0] > 5 * small[0]  # it does degrade as the output error grows
    assert large[2] > large[3]  # BP + TR points closer to the PC gradient than BP alone


@pytest.mark.parametrize("seed", range(12))
def test_tr_term_is_large_and_opposes_bp_so_pc_gradient_is_shorter(seed):
    """The chapter's observations on random 4-8-8-3 tanh nets (its figure of cosines and norm ratios), on
    further nets: at output error s = 0.01 BP alone is not the PC direction (1 - cos > 0.01); at s = 0.01 and
    s = 1 the TR term points largely against BP (cos < -0.5), its norm is 0.25 to 1 times BP's, and the PC
    gradient at the iterated equilibrium is shorter than BP's. PC is computed by inference, BP and TR by
    autodiff of the quadratic model, so the test can fail on any of the four."""
    params, x, _ = random_net(seed, [4, 8, 8, 3], act="tanh", n=8)
    ff = pclib.forward(params, x)
    u = jax.random.normal(jax.random.key(seed + 100), ff[-1].shape)
    u = u / jnp.linalg.norm(u, axis=1, keepdims=True)
    for s in (1e-2, 1.0):
        y = ff[-1] + s * u
        pc = pclib.pc_grads(params, theory.equilibrium(params, x, y, tol=1e-10))
        d = theory.trust_region_decomposition(params, x, y)
        assert float(theory.relative_error(d["bp"], pclib.bp_grads(params, x, y))) < 1e-12
        if s == 1e-2:
            assert 1 - float(theory.tree_cosine(d["bp"], pc)) > 1e-2
        assert float(theory.tree_cosine(d["bp"], d["tr"])) < -0.5
        bp_norm, tr_norm, pc_norm = (float(optax.tree.norm(g)) for g in (d["bp"], d["tr"], pc))
        assert 0.25 < tr_norm / bp_norm < 1  # measured 0.31 to 0.72 on these 12 nets
        assert bp_norm > pc_norm


# --- learning-rate search ------------------------------------------------------------------------


def test_lr_grid_search_picks_the_lowest_mean_loss_and_flags_divergence():
    params, x, y = random_net(0, [3, 6, 2], act="tanh", n=64)
    lrs = [0.01, 0.1, 1e3]
    res = learning.lr_grid_search(params, x, y, lrs=lrs, method="bp", epochs=3, batch_size=16, progress=False)
    assert res.scores[1e3] == float("inf") and res.histories[1e3] is None
    for lr in lrs[:2]:
        _, hist = pclib.train(params, x, y, method="bp", optimizer=optax.sgd(lr), epochs=3, batch_size=16, progress=False)
        assert res.scores[lr] == pytest.approx(np.mean(hist["loss"]), rel=1e-12)
    assert res.best_lr == min(lrs[:2], key=lambda lr: res.scores[lr])
    final = learning.lr_grid_search(params, x, y, lrs=lrs[:2], method="pc", score="final", epochs=3, batch_size=16,
                                    steps=10, dt=0.1, progress=False)
    assert final.scores[final.best_lr] == pytest.approx(np.mean(final.histories[final.best_lr][-1:]), rel=1e-12)


# --- bad input -----------------------------------------------------------------------------------


def test_bad_input_errors_name_the_fix():
    params, x, y = random_net(0, [3, 2], act="tanh")
    with pytest.raises(ValueError, match="at least one hidden layer"):
        theory.fisher_information(params, x)
    with pytest.raises(ValueError, match="same number"):
        toy.toy_loss(jnp.zeros(2), jnp.ones(3), jnp.ones(2))
    with pytest.raises(ValueError, match="1-D arrays"):
        toy.loss_grid(jnp.ones(1), jnp.ones(1), jnp.ones((2, 2)), jnp.ones(3))
    with pytest.raises(ValueError, match="lr > 0"):
        toy.gd_path(lambda w: jnp.sum(w**2), jnp.zeros(2), lr=-1.0, steps=3)
    with pytest.raises(ValueError, match="shape"):
        toy.escape_steps(lambda w: jnp.sum(w**2), jnp.zeros(2), lr=0.1, radius=1.0, max_steps=3)
    with pytest.raises(ValueError, match="positive learning rates"):
        learning.lr_grid_search(params, x, y, lrs=[])
    with pytest.raises(ValueError, match="unknown score"):
        learning.lr_grid_search(params, x, y, lrs=[0.1], score="best")
    with pytest.raises(ValueError, match="diverged at every learning rate"):
        learning.lr_grid_search(params, x, y, lrs=[1e6], method="bp", epochs=2, batch_size=16, progress=False)


# --- deep networks: what the learning-rate comparison measures ---------------------------------


@pytest.mark.parametrize("seed", range(2))
def test_bp_gradient_is_several_times_longer_than_pc_in_deep_tanh_nets(seed):
    """At init of a 10-layer tanh net on digits, |BP| / |PC| (PC after the chapter's 50 steps of dt 0.2) is
    above 3 in total and grows from the top layer to the bottom one: the shorter PC gradient is what lets PC
    take larger learning rates, before any question of direction (chapter 4, deep-network section)."""
    ds = pclib.data.get("digits", seed=0)
    x, y = jnp.asarray(ds.x_train[:64], jnp.float32), jnp.asarray(ds.y_train[:64], jnp.float32)
    params = pclib.init_mlp(jax.random.key(seed), [64] + [64] * 9 + [10], dtype=jnp.float32)
    zs = pclib.infer(params, x, y, steps=50, dt=0.2, check=False).activities
    g_pc, g_bp = pclib.pc_grads(params, zs), pclib.bp_grads(params, x, y)
    total = float(optax.tree.norm(g_bp) / optax.tree.norm(g_pc))
    layers = np.array([float(optax.tree.norm(a) / optax.tree.norm(b)) for a, b in zip(g_bp, g_pc)])
    assert total > 3
    assert layers[0] > 10 * layers[-1] and layers[-1] > 1


# --- the trust-region step -----------------------------------------------------------------------


@pytest.mark.parametrize("seed,widths", [(0, [4, 6, 5, 3]), (1, [3, 5, 2]), (2, [5, 4, 4, 4, 2])])
def test_trust_region_step_is_the_linear_equilibrium_at_output_ratio(seed, widths):
    """Linear nets: trust_region_step(ratio=rho) = equilibrium with precisions (1, ..., 1, rho) - feedforward pass
    (the closed form of chapter 1 by a direct solve), at ratios across 1e-3 .. 1e3."""
    params, x, y = random_net(seed, widths, act="linear")
    ff = pclib.forward(params, x, act="linear")
    for rho in (1e-3, 0.1, 1.0, 10.0, 1e3):
        star = theory.linear_equilibrium(params, x, y, precisions=[1.0] * (len(widths) - 2) + [rho])
        dz = theory.trust_region_step(params, x, y, ratio=rho, act="linear")
        for d, s, f in zip(dz, star[1:-1], ff[1:-1]):
            assert np.allclose(d, s - f, atol=1e-10 * max(1.0, float(jnp.abs(s - f).max())))


@pytest.mark.parametrize("seed", range(3))
def test_trust_region_step_matches_natural_gradient_step_at_each_ratio(seed):
    """tanh nets: the step is the minimiser of the quadratic model with precisions (1, ..., 1, rho), which
    natural_gradient_step computes by a different route (explicit Fisher matrix and Cholesky)."""
    params, x, y = random_net(seed, [4, 8, 8, 3], act="tanh")
    for rho in (0.3, 1.0, 5.0):
        a = theory.trust_region_step(params, x, y, ratio=rho)
        b = theory.natural_gradient_step(params, x, y, precisions=[1.0, 1.0, rho])
        assert theory.relative_error(a, b) < 1e-9


@pytest.mark.parametrize("seed", range(3))
def test_trust_region_step_small_ratio_limit_is_backprop(seed):
    """rho -> 0: dz / rho -> J^{-1} delta, i.e. the hidden errors of the step are rho times backprop's errors
    (built here by forward recursion from theory.backprop_errors)."""
    params, x, y = random_net(seed, [4, 7, 6, 3], act="tanh")
    ff = pclib.forward(params, x)
    delta = theory.backprop_errors(params, ff, y - ff[-1])[:-1]
    expect = [delta[0]]
    for l in range(1, len(delta)):
        _, jvp = jax.jvp(lambda z: jnp.tanh(z @ params[l]["W"].T + params[l]["b"]), (ff[l],), (expect[-1],))
        expect.append(delta[l] + jvp)
    rho = 1e-7
    dz = theory.trust_region_step(params, x, y, ratio=rho)
    assert theory.relative_error([d / rho for d in dz], expect) < 1e-5


@pytest.mark.parametrize("seed", range(3))
def test_trust_region_step_large_ratio_limit_is_gauss_newton(seed):
    """rho -> inf: one hidden layer, linear output: dz -> W2^+ e (the minimum-norm Gauss-Newton / TP step);
    deeper: the linearised output error is zeroed (A dz = e). The radius rises with rho."""
    params, x, y = random_net(seed, [3, 6, 2], act="tanh")
    ff = pclib.forward(params, x)
    gn = (y - ff[-1]) @ np.linalg.pinv(np.asarray(params[1]["W"])).T
    for rho in (1e9, jnp.inf):
        assert theory.relative_error(theory.trust_region_step(params, x, y, ratio=rho)[0], gn) < 1e-6
    deep, xd, yd = random_net(seed, [3, 5, 6, 2], act="linear")
    dz = theory.trust_region_step(deep, xd, yd, ratio=jnp.inf, act="linear")
    assert np.allclose(dz[-1] @ deep[-1]["W"].T, yd - pclib.forward(deep, xd, act="linear")[-1], atol=1e-10)
    radii = np.array([theory.trust_region_radius(params, x, y, ratio=r) for r in (1e-3, 1e-1, 1.0, 10.0, 1e3)])
    assert np.all(np.diff(radii, axis=0) > 0)
    assert np.allclose(theory.trust_region_radius(params, x, y, ratio=1e9), np.linalg.norm(gn, axis=1), rtol=1e-6)


def test_blog_formula_in_the_toy_network():
    """The blog's printed '+' form in the toy (x = y = 1): cosines with the exact PC gradient 0.917, 0.766, 0.973
    at w = (0.5, 0.8), (0.1, -0.2), (1.2, 0.3), from the closed forms dz_hat/dw = (x, 0), I = 1 + w2^2,
    g = -w2 e; BP's cosines 0.975, 0.612, 1.000."""
    X, Y = jnp.array([[1.0]]), jnp.array([[1.0]])
    for w, c_blog, c_bp in [((0.5, 0.8), 0.917, 0.975), ((0.1, -0.2), 0.766, 0.612), ((1.2, 0.3), 0.973, 1.000)]:
        w1, w2 = w
        e = 1 - w1 * w2
        bp = np.array([-w2 * e, -w1 * e])
        closed = bp + np.array([-w2 * e / (1 + w2**2), 0.0])
        exact = np.asarray(jax.grad(toy.toy_equilibrated_energy)(jnp.array(w), X[:, 0], Y[:, 0]))
        got = theory.blog_weight_gradient(toy.toy_params(w1, w2), X, Y, act="linear")
        assert np.allclose([got[0]["W"][0, 0], got[1]["W"][0, 0]], closed, atol=1e-12)
        cos = lambda a, b: a @ b / np.linalg.norm(a) / np.linalg.norm(b)  # noqa: E731
        assert cos(closed, exact) == pytest.approx(c_blog, abs=1e-3)
        assert cos(bp, exact) == pytest.approx(c_bp, abs=1e-3)


def test_trust_region_step_bad_input():
    params, x, y = random_net(0, [3, 4, 2], act="tanh")
    with pytest.raises(ValueError, match="ratio must be > 0"):
        theory.trust_region_step(params, x, y, ratio=0.0)
    with pytest.raises(ValueError, match="one positive number"):
        theory.trust_region_step(params, x, y, ratio=[1.0, 2.0])
    with pytest.raises(ValueError, match="at least one hidden layer"):
        theory.trust_region_step(params[1:], x[:, :4], y, ratio=1.0)


def _small_init_saddle(n_hidden: int, *, epochs: int):
    """Chapter 4's saddle setting on a fourth initialisation (the chapter uses 0, 1, 2): width-32 tanh net
    from init_mlp(scale=0.05) on 512 MNIST digits, PC (T = 50) vs BP at matched step length, best of (0.1, 0.3)."""
    from pclib import compare as fair

    ds = pclib.data.get("mnist5k", seed=0)
    x, y = np.asarray(ds.x_train[:512], np.float32), np.asarray(ds.y_train[:512], np.float32)
    widths = [784] + [32] * n_hidden + [10]
    return fair.compare(lambda k: pclib.init_mlp(k, widths, dtype=jnp.float32, scale=0.05), x, y, lrs=[0.1, 0.3],
                        mode="matched", steps=50, dt=0.2, seeds=(3,), epochs=epochs, batch_size=64, batch_seed=0)


def test_pc_leaves_the_saddle_of_a_deep_net_first_at_matched_step_length():
    """From init_mlp(scale=0.05), a 6-layer tanh net on 512 MNIST digits, matched (normalised) step lengths, each
    method at its best of (0.1, 0.3), 120 iterations, a fourth initialisation (the chapter uses 0, 1, 2): PC's
    loss falls below 0.43 first and its mean loss is lower; PC's gradient is near equilibrium and of BP's norm."""
    c = _small_init_saddle(5, epochs=15)
    assert c.equilibrium_gap.max() < 1e-2 and c.grad_ratio.max() < 1.5
    below = c.losses < 0.43
    assert below[0, 0].any()
    first_pc = int(below[0, 0].argmax())
    first_bp = int(below[1, 0].argmax()) if below[1, 0].any() else c.losses.shape[-1]
    assert first_pc < first_bp
    assert c.losses[0, 0].mean() < c.losses[1, 0].mean()


def test_at_seven_hidden_layers_only_pc_leaves_the_saddle_within_200_iterations():
    """The same setting with 7 hidden layers (a deeper, flatter saddle), a fourth initialisation, 200 iterations:
    BP's loss never falls below 0.43, PC's does; PC's gradient stays near equilibrium and of BP's norm."""
    c = _small_init_saddle(7, epochs=25)
    assert c.equilibrium_gap.max() < 1e-2 and c.grad_ratio.max() < 1.5
    assert c.losses.shape[-1] == 200
    assert not (c.losses[1, 0] < 0.43).any()
    assert (c.losses[0, 0] < 0.43).any()

