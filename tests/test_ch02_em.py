"""Chapter 2 (the EM view): energy decomposition, marginal condition, energy gradient bound,
PC learning as gradient descent on the equilibrated energy, and PC-vs-BP update similarity."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import pclib
from pclib import learning, theory
from pclib.energy import energy_gradient_split
from conftest import random_net


def loss_trace(params, x, y, *, act="linear", dt, steps, init="ffwd", key=None, precisions=None):
    """L(z) at every step, from the recorded trajectory, by an explicit formula (linear output layer)."""
    res = pclib.infer(params, x, y, act=act, steps=steps, dt=dt, init=init, key=key, record=True,
                      precisions=precisions, check=False)
    pi_L = 1.0 if precisions is None else float(precisions[-1])
    W, b = np.asarray(params[-1]["W"]), np.asarray(params[-1]["b"])
    r = np.asarray(y) - (np.asarray(res.trajectory[-2]) @ W.T + b)
    return 0.5 * pi_L * np.sum(r**2, axis=(1, 2)) / r.shape[1]


def lam_max(params, precisions=None):
    return float(np.linalg.eigvalsh(np.asarray(theory.linear_activity_hessian(params, precisions=precisions)))[-1])


# ---------------------------------------------------------------- decomposition and gradients


@pytest.mark.parametrize("seed", range(4))
def test_gradient_split_matches_explicit_formulas(seed):
    """grad_L lives only in z_{L-1} and equals -pi_L J_L^T eps_L; grad_L + grad_E is the inference force."""
    act = ["tanh", "relu", "linear", "tanh"][seed]
    params, x, y = random_net(seed, [5, 7, 6, 8, 3], act=act)
    pi = jnp.array([0.5, 1.0, 2.0, 1.5])
    zs = pclib.infer(params, x, y, act=act, steps=7, dt=0.1, precisions=pi).activities
    gL, gE = energy_gradient_split(params, zs, act=act, precisions=pi)
    eps = pclib.errors(params, zs, act=act)
    W = params[-1]["W"]
    np.testing.assert_allclose(gL[-1], -pi[-1] * eps[-1] @ W, rtol=1e-10, atol=1e-13)  # linear output layer
    for g in gL[:-1]:
        assert float(jnp.abs(g).max()) == 0.0
    total = jax.grad(lambda h: jnp.sum(pclib.sample_energies(params, [x, *h, y], act=act, precisions=pi)))(zs[1:-1])
    for a, b, t in zip(gL, gE, total):
        np.testing.assert_allclose(a + b, t, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("seed", range(5))
def test_equilibrated_energy_below_loss_and_zero_at_fit(seed):
    params, x, y = random_net(seed, [5] + [8] * (1 + seed % 3) + [3], act="linear")
    f_star = float(theory.linear_equilibrated_energy(params, x, y))
    assert 0 <= f_star <= float(pclib.mse_loss(params, x, y, act="linear"))
    # independent: iterative inference from the feedforward pass ends at (or just above) F*
    res = pclib.infer(params, x, y, act="linear", steps=4000, dt=0.1)
    assert abs(float(res.energies[-1]) - f_star) < 1e-8 * max(f_star, 1.0)
    y_fit = pclib.predict(params, x, act="linear")
    assert float(theory.linear_equilibrated_energy(params, x, y_fit)) < 1e-20


@pytest.mark.parametrize("seed", range(4))
def test_equilibrated_energy_below_pi_L_times_loss(seed):
    """Prop. (iii) with precisions: F*(theta) <= pi_L L(theta); the factor pi_L is needed (F* > L is possible)."""
    rng = np.random.default_rng(seed)
    params, x, y = random_net(seed, [5] + [8] * (1 + seed % 3) + [3], act="linear")
    loss = float(pclib.mse_loss(params, x, y, act="linear"))
    pi = jnp.asarray(rng.uniform(0.3, 3.0, size=len(params)))
    assert float(theory.linear_equilibrated_energy(params, x, y, precisions=pi)) <= float(pi[-1]) * loss
    # stiff hidden layers keep z* near the feedforward pass, so F* is close to pi_L L, which exceeds L when pi_L = 3
    stiff = jnp.asarray([1e3] * (len(params) - 1) + [3.0])
    f_stiff = float(theory.linear_equilibrated_energy(params, x, y, precisions=stiff))
    assert loss < f_stiff <= 3.0 * loss
    # independent of the closed form: Euler inference run to a tolerance ends at F*, below pi_L L
    res = pclib.infer(params, x, y, act="linear", tol=1e-11, max_steps=200_000, dt=0.5 / lam_max(params, pi),
                      precisions=pi)
    f_star = float(theory.linear_equilibrated_energy(params, x, y, precisions=pi))
    assert abs(float(res.energies[-1]) - f_star) < 1e-9 * max(1.0, f_star)
    assert f_star < float(pi[-1]) * loss


def test_zero_energy_means_feedforward_pass_and_zero_loss():
    """Prop. 3.1 and its strengthening: F(z) = 0 only at the feedforward pass with y = its output."""
    params, x, _ = random_net(1, [4, 6, 5, 3])
    zs = pclib.forward(params, x)
    assert float(pclib.energy(params, zs)) == 0.0
    assert float(pclib.mse_loss(params, x, zs[-1])) == 0.0
    zs[1] = zs[1] + 1e-3  # any move of a hidden layer gives positive energy
    assert float(pclib.energy(params, zs)) > 0


# ---------------------------------------------------------------- EM monotonicity


@pytest.mark.parametrize("seed", range(4))
def test_exact_em_never_raises_equilibrated_energy(seed):
    params, x, y = random_net(seed, [6] + [10] * (1 + seed % 3) + [3], act="linear")
    f = []
    for _ in range(60):
        z = theory.linear_equilibrium(params, x, y)
        f.append(float(pclib.energy(params, z, act="linear")))
        g = pclib.pc_grads(params, z, act="linear")
        params = jax.tree_util.tree_map(lambda a, b: a - 0.05 * b, params, g)
    assert np.all(np.diff(f) <= 1e-12)
    assert f[-1] < f[0]


# ---------------------------------------------------------------- marginal condition


@pytest.mark.parametrize("seed", range(3))
def test_marginal_residual_one_at_feedforward_zero_at_equilibrium(seed):
    params, x, y = random_net(seed, [6, 9, 8, 4], act="linear")
    ff = pclib.forward(params, x, act="linear")
    ff[-1] = y
    assert abs(float(theory.marginal_residual(params, ff, act="linear")) - 1.0) < 1e-12
    star = theory.linear_equilibrium(params, x, y)
    assert float(theory.marginal_residual(params, star, act="linear")) < 1e-9


@pytest.mark.parametrize("seed", range(3))
def test_marginal_residual_tanh_decays_with_inference(seed):
    params, x, y = random_net(seed, [8, 16, 16, 16, 4])
    traj = pclib.infer(params, x, y, steps=3000, dt=0.1, record=True).trajectory
    r = [float(theory.marginal_residual(params, [z[k] for z in traj])) for k in (0, 100, 1000, 3000)]
    assert abs(r[0] - 1) < 1e-12 and r[1] < r[0] and r[2] < r[1] and r[3] < 1e-8


def test_relu_chatter_window_shrinks_with_dt_while_pointwise_residual_stays():
    """ReLU: fixed-step inference chatters at kinks. The pointwise marginal residual stays large at
    every step size, but the window the iterates visit shrinks in proportion to dt (a factor 4 here);
    the time-averaged force is just the displacement over the window, so it is no evidence."""
    params, x, y = random_net(0, [8, 16, 16, 16, 4], act="relu")
    zs = pclib.infer(params, x, y, act="relu", steps=3000, dt=0.1).activities
    split = jax.jit(jax.vmap(lambda hh: energy_gradient_split(params, [x, *hh, y], act="relu")))
    diam, resid = {}, {}
    for dt in (0.1, 0.025):
        k = int(25 / dt)  # settle for k steps (25 time units), then a window of k steps
        full = pclib.infer(params, x, y, act="relu", steps=2 * k, dt=dt, init=zs, record=True).trajectory
        traj = [t[k:] for t in full]
        h = jnp.concatenate([t.reshape(t.shape[0], -1) for t in traj[1:-1]], axis=1)
        diam[dt] = float(jnp.max(jnp.linalg.norm(h - h.mean(0), axis=1)) / jnp.linalg.norm(h[-1]))
        resid[dt] = float(theory.marginal_residual(params, [t[-1] for t in traj], act="relu"))
        # the averaged Euler force is exactly minus the displacement over the window's length
        for (gl, ge), t in zip(zip(*split(traj[1:-1])), traj[1:-1]):
            np.testing.assert_allclose((gl + ge)[:-1].mean(0), -(t[-1] - t[0]) / 25.0, atol=1e-9)
    assert min(resid.values()) > 0.05
    assert 2.5 < diam[0.1] / diam[0.025] < 8


def test_marginal_residual_undefined_without_output_error():
    params, x, _ = random_net(0, [4, 6, 3])
    zs = pclib.forward(params, x)
    with pytest.raises(ValueError, match="undefined where dL/dz = 0"):
        theory.marginal_residual(params, zs)


def test_gradient_split_needs_a_hidden_layer():
    params, x, y = random_net(0, [4, 3])
    with pytest.raises(ValueError, match="at least one hidden layer"):
        energy_gradient_split(params, [x, y])


# ---------------------------------------------------------------- energy gradient bound


@pytest.mark.parametrize("seed", range(4))
def test_loss_descent_rate_is_minus_dL_dt(seed):
    """-dL/dt along the flow equals the bound's margin, checked by a finite difference of L."""
    act = ["tanh", "linear"][seed % 2]
    params, x, y = random_net(seed, [5, 7, 6, 3], act=act)
    zs = pclib.infer(params, x, y, act=act, steps=5 + 10 * seed, dt=0.1).activities
    rate = theory.loss_descent_rate(params, zs, act=act)
    h = 1e-6
    gL, gE = energy_gradient_split(params, zs, act=act)
    moved = [zs[0]] + [z - h * (a + b) for z, a, b in zip(zs[1:-1], gL, gE)] + [zs[-1]]
    per_sample = lambda z: 0.5 * jnp.sum((z[-1] - pclib.predictions(params, z, act=act)[-1]) ** 2, axis=1)  # noqa: E731
    fd = (per_sample(zs) - per_sample(moved)) / h
    np.testing.assert_allclose(rate, fd, rtol=1e-4, atol=1e-8)


def test_bound_holds_at_feedforward_pass():
    params, x, y = random_net(2, [5, 7, 6, 3])
    ff = pclib.forward(params, x)
    ff[-1] = y
    gL, _ = energy_gradient_split(params, ff)
    np.testing.assert_allclose(theory.loss_descent_rate(params, ff), jnp.sum(gL[-1] ** 2, axis=1), rtol=1e-12)
    assert float(theory.loss_descent_rate(params, ff).min()) > 0


@pytest.mark.parametrize("seed", range(30))
def test_one_linear_hidden_layer_loss_falls_every_step(seed):
    """Theorem: L = 2, linear, ffwd start, dt <= 1/lambda_max(A): L non-increasing at every step."""
    rng = np.random.default_rng(seed)
    params, x, y = random_net(seed, [int(rng.integers(2, 8)), int(rng.integers(1, 10)), int(rng.integers(1, 6))],
                              act="linear")
    pi = jnp.asarray(rng.uniform(0.2, 3.0, size=2))
    dt = float(rng.uniform(0.2, 1.0)) / lam_max(params, pi)
    L = loss_trace(params, x, y, dt=dt, steps=150, precisions=pi)
    assert np.all(np.diff(L) <= 1e-12 * L[0])


def test_one_linear_hidden_layer_large_step_measured():
    """A seeded measurement, not a theorem: on these 10 nets, dt = 1.8/lambda_max made L rise at some step
    (the theorem only says that a fast component of the output error is not monotone, so L *can* rise);
    inference still converges to the equilibrium, as it must for dt < 2/lambda_max."""
    broken = 0
    for seed in range(10):
        params, x, y = random_net(seed, [6, 6, 4], act="linear")
        L = loss_trace(params, x, y, dt=1.8 / lam_max(params), steps=400)
        star = theory.linear_equilibrium(params, x, y)
        assert abs(L[-1] - float(pclib.energy_decomposition(params, star, act="linear")[0])) < 1e-8
        broken += not np.all(np.diff(L) <= 1e-12 * L[0])
    assert broken == 10


def _diag_example(dt_factor, steps=200):
    """The chapter's example: pi = (1, 1), W_2 = diag(1, 3), e = y - y_hat = (1, 1); output error at every step."""
    x = jnp.array([[1.0, -0.5]])
    params = [{"W": jnp.array([[0.3, 0.1], [-0.2, 0.4]]), "b": jnp.zeros(2)},
              {"W": jnp.diag(jnp.array([1.0, 3.0])), "b": jnp.zeros(2)}]
    y = x @ params[0]["W"].T @ params[1]["W"].T + 1.0
    assert abs(lam_max(params) - 10.0) < 1e-12  # lambda = pi_1 + pi_2 s^2 = 2, 10
    traj = pclib.infer(params, x, y, act="linear", steps=steps, dt=dt_factor / 10.0, record=True, check=False).trajectory
    return np.asarray(y[0] - traj[1][:, 0] @ params[1]["W"].T)


def test_large_step_fast_component_oscillates_but_loss_need_not_rise():
    """dt = 1.5/lambda_max: the fast component oscillates around its limit with a non-monotone square, as the proof says,
    but L (the sum over components) never rises: the slower, falling component hides it."""
    e = _diag_example(1.5)
    k = np.arange(len(e))
    # closed form from the proof: bracket_j = 1 - rho_j (1 - (1 - dt lambda_j)^k), rho = (1/2, 9/10)
    expected = np.stack([1 - 0.5 * (1 - 0.7**k), 1 - 0.9 * (1 - (-0.5) ** k)], axis=1)
    np.testing.assert_allclose(e, expected, atol=1e-12)
    assert np.any(np.diff(e[:, 1] ** 2) > 1e-3)  # the fast component's square rises
    assert np.all(np.sign(e[1:8, 1] - 0.1) == [-1, 1, -1, 1, -1, 1, -1])  # deviation from its limit alternates
    L = 0.5 * np.sum(e**2, axis=1)
    assert np.all(np.diff(L) <= 1e-12 * L[0])
    assert abs(L[-1] - 0.5 * (0.5**2 + 0.1**2)) < 1e-12  # converges to (1 - rho_j) e_j


def test_large_step_example_loss_rises_with_a_larger_step():
    """The same example can fail: the statement 'L can rise' is attained (dt = 1.9/lambda_max)."""
    e = _diag_example(1.9)
    L = 0.5 * np.sum(e**2, axis=1)
    assert np.any(np.diff(L) > 1e-6)


def test_start_on_the_wrong_side_raises_the_loss():
    """A start whose output already fits y (L = 0) must end with L > 0: the loss rises."""
    params, x, y = random_net(0, [5, 8, 3], act="linear")
    W2, b2 = params[1]["W"], params[1]["b"]
    z1 = (y - b2) @ jnp.linalg.pinv(W2).T
    L = loss_trace(params, x, y, dt=0.05, steps=400, init=[x, z1, y])
    assert L[0] < 1e-20 and L[-1] > 1e-3
    star = theory.linear_equilibrium(params, x, y)
    np.testing.assert_allclose(L[-1], float(pclib.energy_decomposition(params, star, act="linear")[0]), rtol=1e-6)


def test_deep_net_violates_bound_from_feedforward_pass():
    """The energy gradient bound need not persist: chapter 1's hand-built two-hidden-layer net, small step."""
    params, x, y = theory.leaky_output_network()
    dt = 0.1 / lam_max(params)
    res = pclib.infer(params, x, y, act="linear", steps=1200, dt=dt, record=True)
    rate = np.asarray(jax.vmap(lambda zs: theory.loss_descent_rate(params, zs, act="linear"))(res.trajectory))[:, 0]
    L = loss_trace(params, x, y, dt=dt, steps=1200)
    assert rate[0] > 0 and rate.min() < 0
    assert np.all(np.diff(L)[rate[:-1] < -1e-9] > 0)
    assert np.all(np.diff(np.asarray(res.energies)) <= 0)  # F still falls


@pytest.mark.parametrize("act", ["linear", "tanh"])
def test_feedforward_start_is_not_the_largest_margin(act):
    """Shifting the top hidden layer by 0.3 * grad L raises -dL/dt at t = 0 in every sample. For a linear
    output layer the shifted rate has a closed form: with g = grad_{z_{L-1}} L at the feedforward pass,
    the shift s = 0.3 g adds its own error s, and g' = g + 0.3 W_L^T W_L g, so rate = |g'|^2 + 0.3 g'.g."""
    params, x, y = random_net(0, [8, 12, 12, 4], act=act)
    zs = pclib.forward(params, x, act=act)[:-1] + [y]
    g = energy_gradient_split(params, zs, act=act)[0][-1]
    shifted = zs[:-2] + [zs[-2] + 0.3 * g, y]
    r0 = np.asarray(theory.loss_descent_rate(params, zs, act=act))
    r1 = np.asarray(theory.loss_descent_rate(params, shifted, act=act))
    np.testing.assert_allclose(r0, np.sum(np.asarray(g) ** 2, 1), rtol=1e-10)
    W = np.asarray(params[-1]["W"])
    g2 = np.asarray(g) + 0.3 * np.asarray(g) @ W.T @ W
    np.testing.assert_allclose(r1, np.sum(g2**2, 1) + 0.3 * np.sum(g2 * np.asarray(g), 1), rtol=1e-10)
    assert np.all(r1 > r0)


# ---------------------------------------------------------------- Theorem 3.6 and the envelope theorem


@pytest.mark.parametrize("seed", range(5))
def test_pc_gradient_is_gradient_of_equilibrated_energy(seed):
    params, x, y = random_net(seed, [5] + [7] * (1 + seed % 3) + [3], act="linear")
    pi = jnp.linspace(0.5, 2.0, len(params))
    g_env = jax.grad(lambda p: theory.linear_equilibrated_energy(p, x, y, precisions=pi))(params)
    # independent of the closed form: PC gradient at an iterated equilibrium
    zs = pclib.infer(params, x, y, act="linear", steps=6000, dt=0.5 / lam_max(params, pi), precisions=pi).activities
    g_pc = pclib.pc_grads(params, zs, act="linear", precisions=pi)
    assert float(theory.relative_error(g_pc, g_env)) < 1e-7
    # and it differs from backprop's gradient
    assert float(theory.relative_error(pclib.bp_grads(params, x, y, act="linear"), g_env)) > 1e-3


def _norm(tree):
    return jnp.sqrt(sum(jnp.sum(v**2) for v in jax.tree_util.tree_leaves(tree)))


def _pc_full_batch(params, x, y, iters, lr=0.05):
    """Per update: (L, |grad L|) and (F*, |PC grad|, spectral norm of W_2)."""
    def one(p, _):
        z = theory.linear_equilibrium(p, x, y)
        g = pclib.pc_grads(p, z, act="linear")
        gb = pclib.bp_grads(p, x, y, act="linear")
        rec = (pclib.mse_loss(p, x, y, act="linear"), _norm(gb),
               pclib.energy(p, z, act="linear"), _norm(g), jnp.linalg.norm(p[-1]["W"], ord=2))
        return jax.tree_util.tree_map(lambda a, b: a - lr * b, p, g), rec
    return jax.lax.scan(one, params, None, length=iters)


def _reduced_rank_loss(x, y, rank):
    """Closed form via SVD, independent of any training."""
    xc, yc = np.asarray(x) - np.mean(x, 0), np.asarray(y) - np.mean(y, 0)
    fit = xc @ np.linalg.lstsq(xc, yc, rcond=None)[0]
    u, s, vt = np.linalg.svd(fit, full_matrices=False)
    return 0.5 * np.sum((yc - (u[:, :rank] * s[:rank]) @ vt[:rank]) ** 2) / len(yc)


def test_pc_training_drives_bp_gradient_to_zero_on_wide_net():
    params, x, y = pclib.random_problem(0, [4, 8, 2], act="linear", n=32)
    _, (loss, gnorm, f_star, _, w2) = _pc_full_batch(params, x, y, 20000)
    assert float(gnorm[-1]) < 1e-2 * float(gnorm[0])
    best = _reduced_rank_loss(x, y, 2)
    assert float(loss[-1]) - best < 1e-5
    # F* falls far towards 0 while L cannot go below the (positive) least-squares optimum ...
    assert best > 0.1 and float(f_star[-1]) < 0.05 * float(f_star[0])
    # ... which is possible only as W_2 grows: F* >= L / (1 + |W_2|^2) (one hidden layer, unit precisions)
    f_star, loss, w2 = np.asarray(f_star), np.asarray(loss), np.asarray(w2)
    assert np.all(f_star >= loss / (1 + w2**2) * (1 - 1e-12))
    assert w2[-1] > 3 * w2[0]


def _pc_blocks(params, x, y, iters, every=1000, lr=0.05):
    """Full-batch PC with exact E-steps; after every block: (L, |grad L|, |W_2|_F, -log p(y|x), F*)."""
    def one(p, _):
        g = pclib.pc_grads(p, theory.linear_equilibrium(p, x, y), act="linear")
        return jax.tree_util.tree_map(lambda a, b: a - lr * b, p, g), None

    def block(p, _):
        p = jax.lax.scan(one, p, None, length=every)[0]
        return p, jnp.stack([pclib.mse_loss(p, x, y, act="linear"), _norm(pclib.bp_grads(p, x, y, act="linear")),
                             jnp.linalg.norm(p[-1]["W"]), theory.linear_log_likelihood(p, x, y),
                             theory.linear_equilibrated_energy(p, x, y)])
    p, rec = jax.lax.scan(block, params, None, length=iters // every)
    return p, np.asarray(rec)


def test_pc_training_on_bottleneck_tends_to_the_principal_direction():
    """Chapter 2's bottleneck proposition, against expected values computed by hand below from the data
    alone (PCA of the targets, a least-squares fit along it, reduced-rank regression by SVD): after 200k
    exact-E-step PC updates, the output direction is the targets' top principal direction, not backprop's;
    the loss gap to backprop's optimum is the predicted one; |grad L| |W_2| tends to the predicted c;
    -log p(y|x) rises while F* falls; and backprop itself reaches the reduced-rank optimum."""
    params, x, y = pclib.random_problem(0, [4, 1, 2], act="linear", n=32)
    X, Y = np.asarray(x), np.asarray(y)
    yc = Y - Y.mean(0)
    lam, U = np.linalg.eigh(yc.T @ yc / len(Y))
    v1 = U[:, -1]
    Xa = np.c_[X, np.ones(len(X))]
    t = Xa @ np.linalg.lstsq(Xa, yc @ v1, rcond=None)[0]
    loss_pc = 0.5 * lam[0] + 0.5 * np.mean((yc @ v1 - t) ** 2)
    c = np.linalg.norm((yc - np.outer(yc @ v1, v1)).T @ t / len(Y))
    best = _reduced_rank_loss(x, y, 1)
    fit = Xa @ np.linalg.lstsq(Xa, yc, rcond=None)[0]
    v_rrr = np.linalg.svd(fit, full_matrices=False)[2][0]
    # the library's low_rank_limits agrees with the hand computation
    lim = theory.low_rank_limits(x, y, rank=1)
    np.testing.assert_allclose([lim.pc_loss, lim.bp_loss, lim.pc_grad_scale, lim.pc_energy_inf],
                               [loss_pc, best, c, 0.5 * lam[0]], rtol=1e-10)
    p_end, rec = _pc_blocks(params, x, y, 200_000)
    v = np.asarray(p_end[1]["W"])[:, 0]
    v = v / np.linalg.norm(v)
    assert abs(v @ v1) > 0.99999 and abs(v @ v_rrr) < 0.6
    assert abs((rec[-1, 0] - best) / (loss_pc - best) - 1) < 1e-2 and loss_pc - best > 0.05
    assert abs(rec[-1, 1] * rec[-1, 2] / c - 1) < 1e-2
    # F* approaches its infimum (at infinity) from above: most of the initial gap is closed, none crossed
    assert 0 < rec[-1, 4] - 0.5 * lam[0] < 0.1 * (rec[0, 4] - 0.5 * lam[0])
    assert np.all(np.diff(rec[100:, 3]) > 0) and np.all(np.diff(rec[:, 4]) < 0)
    assert np.all(np.diff(rec[100:, 2]) > 0)  # |W_2| keeps growing

    def bp(p, _):
        return jax.tree_util.tree_map(lambda a, b: a - 0.05 * b, p, pclib.bp_grads(p, x, y, act="linear")), None
    p_bp, _ = jax.lax.scan(bp, params, None, length=20000)
    assert abs(float(pclib.mse_loss(p_bp, x, y, act="linear")) - best) < 1e-8
    # at backprop's optimum PC's gradient (that of F*) is not zero, so PC does not stop there
    g = jax.grad(lambda p: theory.linear_equilibrated_energy(p, x, y))(p_bp)
    assert float(_norm(g)) > 1e-3


@pytest.mark.parametrize("seed", range(3))
def test_bottleneck_equilibrated_energy_splits_along_and_across_the_output_direction(seed):
    """F* (from the exact equilibrium) = (1/2N) sum |(I - vv^T)(y - b_2)|^2 + (v^T e)^2 / (1 + r^2) for
    width-1 nets; F* >= (1/2)(sum of all but the top eigenvalue of the target covariance), and the
    explicit family W_1 = 0, b_1 = 0, b_2 = mean(y), W_2 = r v_1 attains it up to lambda_1 / (2(1 + r^2))."""
    params, x, y = random_net(seed, [3, 1, 3], act="linear", scale=1.0 + seed)
    F = float(pclib.energy(params, theory.linear_equilibrium(params, x, y), act="linear"))
    W2, b2 = np.asarray(params[1]["W"])[:, 0], np.asarray(params[1]["b"])
    r, v = np.linalg.norm(W2), W2 / np.linalg.norm(W2)
    Y = np.asarray(y)
    e = Y - np.asarray(pclib.predict(params, x, act="linear"))
    P = np.eye(3) - np.outer(v, v)
    expected = 0.5 * np.mean(np.sum(((Y - b2) @ P) ** 2, 1) + (e @ v) ** 2 / (1 + r**2))
    np.testing.assert_allclose(F, expected, rtol=1e-10)
    yc = Y - Y.mean(0)
    lam, U = np.linalg.eigh(yc.T @ yc / len(Y))
    assert F >= 0.5 * lam[:2].sum() * (1 - 1e-12)
    for rr in (1.0, 10.0, 100.0):
        p = [{"W": jnp.zeros_like(params[0]["W"]), "b": jnp.zeros(1)}, {"W": jnp.asarray(rr * U[:, -1:]), "b": jnp.asarray(Y.mean(0))}]
        np.testing.assert_allclose(float(theory.linear_equilibrated_energy(p, x, y)),
                                   0.5 * lam[:2].sum() + lam[2] / (2 * (1 + rr**2)), rtol=1e-10)


@pytest.mark.parametrize("seed", range(3))
def test_wide_critical_points_of_equilibrated_energy_are_least_squares(seed):
    """With W_2 of full row rank fixed, weights whose output map is the least-squares fit make the gradient
    of F* in (W_1, b_1, b_2) vanish; moving the map off the fit makes it non-zero."""
    params, x, y = random_net(seed, [4, 8, 2], act="linear")
    X, Y = np.asarray(x), np.asarray(y)
    Xa = np.c_[X, np.ones(len(X))]
    B = np.linalg.lstsq(Xa, Y, rcond=None)[0]  # Y ~ X A^T + c
    A, c0 = B[:4].T, B[4]
    W2, b2 = np.asarray(params[1]["W"]), np.asarray(params[1]["b"])
    pinv = np.linalg.pinv(W2)
    def with_map(A_, c_):
        return [{"W": jnp.asarray(pinv @ A_), "b": jnp.asarray(pinv @ (c_ - b2))}, {"W": jnp.asarray(W2), "b": jnp.asarray(b2)}]
    grad = lambda p: jax.grad(lambda q: theory.linear_equilibrated_energy(q, x, y))(p)  # noqa: E731
    g = grad(with_map(A, c0))
    assert max(float(jnp.abs(g[0]["W"]).max()), float(jnp.abs(g[0]["b"]).max()), float(jnp.abs(g[1]["b"]).max())) < 1e-12
    g = grad(with_map(A + 0.1, c0))
    assert float(jnp.abs(g[0]["W"]).max()) > 1e-4
    np.testing.assert_allclose(theory.least_squares_loss(x, y), 0.5 * np.mean(np.sum((Y - Xa @ B) ** 2, 1)), rtol=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_linear_log_likelihood_matches_the_generative_model(seed):
    """-mean log p(y|x) against an independent computation: the model's covariance propagated layer by
    layer (Sigma_l = W_l Sigma_{l-1} W_l^T + I / pi_l) and SciPy's Gaussian density; and the identity
    -log p = F* + (1/2) log det(2 pi S) with F* from iterative inference, not the closed form."""
    from scipy.stats import multivariate_normal

    params, x, y = random_net(seed, [4] + [5] * (1 + seed % 3) + [3], act="linear")
    pi = jnp.asarray(np.random.default_rng(seed).uniform(0.3, 3.0, size=len(params)))
    m, C = np.asarray(x), np.zeros((4, 4))
    for layer, prec in zip(params, np.asarray(pi)):
        W = np.asarray(layer["W"])
        m, C = m @ W.T + np.asarray(layer["b"]), W @ C @ W.T + np.eye(len(W)) / prec
    expected = -np.mean([multivariate_normal(mi, C).logpdf(yi) for mi, yi in zip(m, np.asarray(y))])
    nll = float(theory.linear_log_likelihood(params, x, y, precisions=pi))
    np.testing.assert_allclose(nll, expected, rtol=1e-10)
    zs = pclib.infer(params, x, y, act="linear", steps=8000, dt=0.5 / lam_max(params, pi), precisions=pi).activities
    F_star = float(pclib.energy(params, zs, act="linear", precisions=pi))
    np.testing.assert_allclose(nll, F_star + 0.5 * np.linalg.slogdet(2 * np.pi * C)[1], rtol=1e-8)


def test_linear_log_likelihood_and_low_rank_limits_reject_bad_input():
    params, x, y = random_net(0, [4, 5, 3], act="linear")
    with pytest.raises(ValueError, match="precisions must all be positive"):
        theory.linear_log_likelihood(params, x, y, precisions=jnp.array([1.0, 0.0]))
    with pytest.raises(ValueError, match="rank must be between 1 and d_out - 1"):
        theory.low_rank_limits(x, y, rank=3)
    with pytest.raises(ValueError, match="same N"):
        theory.low_rank_limits(x, y[:-1], rank=1)


@pytest.mark.parametrize("seed", range(3))
def test_one_hidden_layer_equilibrated_energy_formula(seed):
    """F* = (1/2N) sum_i e_i^T (I + W2 W2^T)^{-1} e_i for one linear hidden layer and unit precisions."""
    params, x, y = random_net(seed, [4, 3 + seed, 2], act="linear")
    e = np.asarray(y - pclib.predict(params, x, act="linear"))
    W2 = np.asarray(params[1]["W"])
    S = np.linalg.inv(np.eye(2) + W2 @ W2.T)
    expected = 0.5 * np.einsum("ni,ij,nj->", e, S, e) / len(e)
    np.testing.assert_allclose(theory.linear_equilibrated_energy(params, x, y), expected, rtol=1e-10)


# ---------------------------------------------------------------- update similarity


def test_update_cosine_basic_properties():
    params, x, y = random_net(0, [5, 7, 3])
    g = pclib.bp_grads(params, x, y)
    assert abs(float(learning.update_cosine(g, g)) - 1) < 1e-12
    neg = jax.tree_util.tree_map(lambda v: -2.0 * v, g)
    assert abs(float(learning.update_cosine(g, neg)) + 1) < 1e-12
    other = pclib.pc_grads(params, pclib.infer(params, x, y, steps=30).activities)
    flat = lambda t: np.concatenate([np.ravel(v) for v in jax.tree_util.tree_leaves(t)])  # noqa: E731
    a, b = flat(g), flat(other)
    np.testing.assert_allclose(learning.update_cosine(g, other), a @ b / np.linalg.norm(a) / np.linalg.norm(b),
                               rtol=1e-12)
    per = learning.update_cosine(g, other, per_layer=True)
    assert per.shape == (2,)
    la, lb = flat(g[0]), flat(other[0])
    np.testing.assert_allclose(per[0], la @ lb / np.linalg.norm(la) / np.linalg.norm(lb), rtol=1e-12)


def test_update_cosine_errors():
    params, x, y = random_net(0, [5, 7, 3])
    g = pclib.bp_grads(params, x, y)
    with pytest.raises(ValueError, match="same structure"):
        learning.update_cosine(g, g[:1])
    zero = jax.tree_util.tree_map(jnp.zeros_like, g)
    with pytest.raises(ValueError, match="zero update"):
        learning.update_cosine(g, zero)


def test_train_compare_records_independent_cosines():
    """The recorded cosine equals update_cosine(pc_grads, bp_grads) recomputed at the same weights and batch."""
    params, x, y = random_net(3, [6, 8, 8, 3], n=64)
    opt = optax.sgd(0.05, momentum=0.9)
    seen = []
    batches = list(pclib.data.batches(np.asarray(x), np.asarray(y), batch_size=16, seed=5 * 1_000_003))
    p = params
    st = opt.init(p)
    for xb, yb in batches:
        zs = pclib.infer(p, xb, yb, steps=15, dt=0.2).activities
        g_pc, g_bp = pclib.pc_grads(p, zs), pclib.bp_grads(p, xb, yb)
        seen.append((float(learning.update_cosine(g_pc, g_bp)), float(pclib.mse_loss(p, xb, yb))))
        u, st = opt.update(g_pc, st, p)
        p = optax.apply_updates(p, u)
    p_end, h = learning.train_compare(params, x, y, optimizer=opt, epochs=1, batch_size=16, seed=5, steps=15, dt=0.2)
    np.testing.assert_allclose(h["cosine"], [c for c, _ in seen], rtol=1e-9)
    np.testing.assert_allclose(h["loss"], [l for _, l in seen], rtol=1e-9)
    assert h["cosine_layers"].shape == (4, 3)
    assert float(theory.relative_error(p_end, p)) < 1e-10
    assert np.all(h["cosine"] < 1) and np.all(h["cosine"] > 0)


def test_train_compare_rejects_bad_batch_size():
    params, x, y = random_net(0, [5, 7, 3])
    with pytest.raises(ValueError, match="batch_size must be between 1"):
        learning.train_compare(params, x, y, batch_size=0)
    with pytest.raises(ValueError, match="pass lr"):
        learning.train_compare(params, x, y, optimizer=optax.sgd)
    with pytest.raises(ValueError, match="must be a factory"):
        learning.train_compare(params, x, y, optimizer=optax.sgd(0.1), lr=0.1)


def test_train_compare_with_a_rate_factory_compiles_once():
    """optimizer=factory with lr: the same history as the transformation built at that rate, and runs at
    other rates and seeds reuse one compiled program."""
    from conftest import count_compilations

    params, x, y = random_net(1, [6, 8, 3], n=64)
    sgd = lambda lr: optax.sgd(lr, momentum=0.9)  # noqa: E731
    _, h_ref = learning.train_compare(params, x, y, optimizer=sgd(0.05), epochs=2, batch_size=16, seed=2)
    _, h = learning.train_compare(params, x, y, optimizer=sgd, lr=0.05, epochs=2, batch_size=16, seed=2)
    for k in h_ref:
        np.testing.assert_allclose(h[k], h_ref[k], rtol=1e-10)
    with count_compilations() as n:
        for lr, seed in ((0.1, 2), (0.2, 3)):
            learning.train_compare(params, x, y, optimizer=sgd, lr=lr, epochs=2, batch_size=16, seed=seed)
    assert n["n"] == 0


def test_pc_gradient_is_several_times_shorter_than_bp_at_initialisation():
    """Why one shared learning rate is unfair: on the chapter's digits network, PC's gradient after 20
    inference steps is at least 2 times shorter than backprop's in every layer, for three seeds."""
    ds = pclib.data.digits(seed=0)
    xb, yb = ds.x_train[:64], ds.y_train[:64]
    for seed in range(3):
        p0 = pclib.init_mlp(jax.random.key(seed), [64, 64, 32, 10], act="relu")
        zs = pclib.infer(p0, xb, yb, act="relu", steps=20, dt=0.2).activities
        g_pc, g_bp = pclib.pc_grads(p0, zs, act="relu"), pclib.bp_grads(p0, xb, yb, act="relu")
        for a, b in zip(g_pc, g_bp):
            assert float(_norm(b)) > 2 * float(_norm(a))


def test_update_cosine_depends_on_learning_rate_on_digits():
    """The chapter's Fig. 4C run at two rates, one seed: the cosine stays between 0.5 and 0.99, and the
    share of iterations below the paper's 0.9 is larger at the smaller rate."""
    ds = pclib.data.digits(seed=0)
    p0 = pclib.init_mlp(jax.random.key(0), [64, 64, 32, 10], act="relu")
    share = []
    sgd = lambda r: optax.sgd(r, momentum=0.9)  # noqa: E731  (one factory: both rates share one compiled run)
    for lr in (0.05, 0.2):
        _, h = learning.train_compare(p0, ds.x_train, ds.y_train, optimizer=sgd, lr=lr, epochs=6, batch_size=64,
                                      seed=0, act="relu", steps=20, dt=0.2)
        assert h["cosine"].min() > 0.5 and h["cosine"].max() < 0.99
        share.append(np.mean(h["cosine"] < 0.9))
    assert share[0] > share[1]
