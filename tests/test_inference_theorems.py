"""Chapter 1's claims about inference, each over seeded sweeps of random networks.

Expected values come from closed forms (pclib.theory, written independently of the
iterative code), from the backprop recursion, or from hand-written formulas.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import pclib
from pclib import theory
from conftest import random_net

ACTS = ["linear", "tanh", "relu"]


@pytest.mark.parametrize("seed", range(8))
def test_thm31_free_output_settles_at_feedforward_pass(seed):
    """Millidge et al. Thm 3.1: input clamped, output free -> equilibrium = feedforward pass,
    from a random start, for one to four hidden layers."""
    act = ["linear", "tanh"][seed % 2]
    params, x, _ = random_net(seed, [5] + [8] * (1 + seed % 4) + [3], act=act)
    res = pclib.infer(params, x, None, act=act, steps=6000, dt=0.1, init="normal", key=jax.random.key(seed))
    ff = pclib.forward(params, x, act=act)
    assert float(theory.relative_error(res.activities, ff)) < 1e-6
    assert float(res.energies[-1]) < 1e-12


def test_inference_is_per_sample():
    """Each sample follows its own energy: running a batch equals running each sample alone."""
    params, x, y = random_net(1, [5, 8, 8, 3], n=6)
    batch = pclib.infer(params, x, y, steps=30, dt=0.2).activities
    for i in range(6):
        single = pclib.infer(params, x[i : i + 1], y[i : i + 1], steps=30, dt=0.2).activities
        for zb, zs in zip(batch, single):
            np.testing.assert_allclose(zb[i : i + 1], zs, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_song_first_steps_give_backprop_errors(seed):
    """From the feedforward pass, after k steps the error of layer L-k equals dt^k times the BP
    signal -dl/dz_{L-k} at the feedforward pass, and every layer below it still has zero error."""
    act = ACTS[seed % 3]
    params, x, y = random_net(seed, [6, 8, 7, 8, 9, 4], act=act)
    L = len(params)
    ff = pclib.forward(params, x, act=act)
    delta = theory.backprop_errors(params, ff, y - ff[-1], act=act)  # BP recursion, index l-1 -> layer l
    dt = 0.1 + 0.2 * seed
    traj = pclib.infer(params, x, y, act=act, steps=L - 1, dt=dt, record=True, check=False).trajectory
    for k in range(1, L):
        eps = pclib.errors(params, [z[k] for z in traj], act=act)  # after k steps
        np.testing.assert_allclose(eps[L - 1 - k], dt**k * delta[L - 1 - k], rtol=1e-10, atol=1e-14)
        for lower in eps[: L - 1 - k]:
            assert float(jnp.max(jnp.abs(lower))) == 0.0


def test_backprop_errors_are_negative_loss_gradients():
    """The BP recursion at the feedforward pass with e = y - y_hat is -N dL/dz_l, by autodiff."""
    params, x, y = random_net(3, [5, 8, 8, 3])
    ff = pclib.forward(params, x)
    delta = theory.backprop_errors(params, ff, y - ff[-1])

    def loss_from(l, z):
        zl = z
        for p, f in zip(params[l:], pclib.model.layer_activations(len(params), act="tanh", out_act="linear")[l:]):
            zl = f(pclib.model.preactivation(p, zl))
        return 0.5 * jnp.sum((y - zl) ** 2)

    for l in range(1, len(params)):
        np.testing.assert_allclose(delta[l - 1], -jax.grad(loss_from, argnums=1)(l, ff[l]), rtol=1e-10)


def _equilibrium(params, x, y, act):
    """The clamped equilibrium solved to 1e-10 by Euler steps (theory.equilibrium raises rather than return a
    point that misses it; linear nets use the closed form), and its errors."""
    zs = theory.equilibrium(params, x, y, act=act, tol=1e-10, method="euler")
    return zs, pclib.errors(params, zs, act=act)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("act", ["tanh", "linear"])
def test_equilibrium_errors_obey_the_recursion_at_equilibrium(seed, act):
    """Stationarity (the first line of Thm 3.2's proof): eps_l* = J_{l+1}(z_l*)^T eps_{l+1}*.
    (Smooth activations: with ReLU the equilibrium can sit on a kink where J is undefined.)"""
    params, x, y = random_net(seed, [6, 12, 12, 4], act=act)
    zs, eps = _equilibrium(params, x, y, act)
    rec = theory.backprop_errors(params, zs, eps[-1], act=act)
    assert float(theory.relative_error(eps[:-1], rec[:-1])) < 1e-6


@pytest.mark.parametrize("seed", range(4))
def test_thm32_gap_to_backprop_shrinks_linearly_with_output_error(seed):
    """Thm 3.2: the gap between the equilibrium errors and the BP recursion through the feedforward
    Jacobians is O(eps * eps_f): for tanh it shrinks in proportion to the output-error size s, and for
    linear nets (f' constant) it is zero."""
    params, x, _ = random_net(seed, [6, 16, 16, 4], act="tanh", n=32)
    ff = pclib.forward(params, x)
    u = jax.random.normal(jax.random.key(50 + seed), ff[-1].shape)
    u = u / jnp.linalg.norm(u, axis=1, keepdims=True)
    gaps = []
    for s in (1e-3, 1e-2, 1e-1):
        _, eps = _equilibrium(params, x, ff[-1] + s * u, "tanh")
        rec = theory.backprop_errors(params, ff, eps[-1])
        gaps.append(float(theory.relative_error(eps[:-1], rec[:-1])))
    ratios = np.array(gaps[1:]) / np.array(gaps[:-1])
    assert np.all((ratios > 10 / 1.5) & (ratios < 10 * 1.5)), (gaps, ratios)
    lin, xl, yl = random_net(seed, [6, 16, 16, 4], act="linear")
    ffl = pclib.forward(lin, xl, act="linear")
    _, eps = _equilibrium(lin, xl, yl, "linear")
    rec = theory.backprop_errors(lin, ffl, eps[-1], act="linear")
    assert float(theory.relative_error(eps[:-1], rec[:-1])) < 1e-8


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    hidden=st.lists(st.integers(2, 20), min_size=1, max_size=3),
    bias=st.booleans(),
)
def test_thm34_linear_equilibrium_matches_iterative_inference(seed, hidden, bias):
    """Thm 3.4: the closed-form (direct solve) equilibrium of a linear PCN equals the limit of inference."""
    widths = [10] + hidden + [5]
    params, x, y = random_net(seed, widths, act="linear", n=32, bias=bias)
    H = theory.linear_activity_hessian(params)
    lam = np.linalg.eigvalsh(np.asarray(H))
    dt = 1.0 / lam[-1]  # stable: Euler converges for dt < 2 / lambda_max
    steps = int(np.ceil(np.log(1e-10) / np.log(1 - dt * lam[0])))  # contraction to 1e-10
    res = pclib.infer(params, x, y, act="linear", steps=steps, dt=dt)
    star = theory.linear_equilibrium(params, x, y)
    flat = lambda zs: np.concatenate([np.ravel(z) for z in zs[1:-1]])  # noqa: E731  (on the host: no compiles)
    assert np.linalg.norm(flat(res.activities) - flat(star)) < 1e-6 * np.linalg.norm(flat(star))


@pytest.mark.parametrize("seed", range(4))
def test_thm35_precision_weighted_linear_equilibrium(seed):
    """Thm 3.5: with scalar precisions the closed form still matches inference, and it matches
    Millidge et al.'s layerwise fixed-point form z_l* = (I + p W^T W)^-1 [W z_{l-1}* + p W^T z_{l+1}*]."""
    params, x, y = random_net(seed, [6, 9, 7, 4], act="linear", bias=False)
    pi = jnp.array([1.0, 0.2, 5.0]) * (1 + seed)
    lam = np.linalg.eigvalsh(np.asarray(theory.linear_activity_hessian(params, precisions=pi)))
    dt = 1.0 / lam[-1]
    steps = int(np.ceil(np.log(1e-11) / np.log(1 - dt * lam[0])))
    res = pclib.infer(params, x, y, act="linear", steps=steps, dt=dt, precisions=pi)
    star = theory.linear_equilibrium(params, x, y, precisions=pi)
    assert float(theory.relative_error(res.activities[1:-1], star[1:-1])) < 1e-6
    for l in (1, 2):
        W, Wu = params[l - 1]["W"], params[l]["W"]
        p = pi[l] / pi[l - 1]
        A = jnp.eye(W.shape[0]) + p * Wu.T @ Wu
        rhs = star[l - 1] @ W.T + p * star[l + 1] @ Wu
        np.testing.assert_allclose(jnp.linalg.solve(A, rhs.T).T, star[l], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_linear_energy_is_convex_with_hessian_I_plus_WtW(seed):
    """App. A.3: the activity Hessian (by jax.hessian) is the block matrix of pclib.theory, its
    diagonal blocks are I + W_{l+1}^T W_{l+1}, and it is positive definite."""
    params, x, y = random_net(seed, [4, 6, 5, 7, 3], act="linear")
    dims = [6, 5, 7]

    def F(flat):
        parts = jnp.split(flat, np.cumsum(dims)[:-1])
        return pclib.energy(params, [x[:1]] + [p[None] for p in parts] + [y[:1]], act="linear")

    Hn = jax.hessian(F)(jnp.zeros(sum(dims)))
    H = theory.linear_activity_hessian(params)
    np.testing.assert_allclose(Hn, H, atol=1e-12)
    off = np.cumsum([0] + dims)
    for i in range(3):
        Wu = params[i + 1]["W"]
        np.testing.assert_allclose(H[off[i] : off[i + 1], off[i] : off[i + 1]], np.eye(dims[i]) + Wu.T @ Wu, atol=1e-12)
    assert np.linalg.eigvalsh(np.asarray(H)).min() > 0


@pytest.mark.parametrize("seed", range(3))
def test_one_layer_ode_solution_is_the_limit_of_euler(seed):
    """App. A.4: for a two-layer linear net the exact path z(t) = z* + exp(-At)(z(0) - z*) is the
    dt -> 0 limit of inference, with first-order (Euler) convergence."""
    import scipy.linalg

    params, x, y = random_net(seed, [5, 6, 4], act="linear")
    z0 = pclib.forward(params, x, act="linear")
    z0[-1] = y
    T = 2.0
    path = theory.layer_flow(params, z0, 1, jnp.array([0.0, 0.5, T]))
    # the same path written out independently: A, c and z* by hand, e^{-At} by SciPy's Pade approximant
    (W1, b1), (W2, b2) = [(np.asarray(p["W"]), np.asarray(p["b"])) for p in params]
    A = np.eye(6) + W2.T @ W2
    z_star = np.linalg.solve(A, (np.asarray(x) @ W1.T + b1 + (np.asarray(y) - b2) @ W2).T).T
    for t, z_t in zip((0.0, 0.5, T), path):
        by_hand = z_star + (np.asarray(z0[1]) - z_star) @ scipy.linalg.expm(-A * t).T
        np.testing.assert_allclose(z_t, by_hand, rtol=1e-10, atol=1e-12)
    exact = path[-1]
    errs = []
    for steps in (100, 200, 400):  # dt = T / steps; one compiled program records 400 steps, read after `steps`
        z = pclib.infer(params, x, y, act="linear", steps=400, dt=T / steps, record=True).trajectory[1][steps]
        errs.append(float(theory.relative_error(z, exact)))
    assert errs[-1] < 1e-2
    assert 1.7 < errs[0] / errs[1] < 2.3 and 1.7 < errs[1] / errs[2] < 2.3, errs
    # and at t -> infinity the path ends at the closed-form equilibrium
    far = theory.layer_flow(params, z0, 1, jnp.array([200.0]))[0]
    np.testing.assert_allclose(far, theory.linear_equilibrium(params, x, y)[1], rtol=1e-9, atol=1e-12)


def _decomposition_trace(params, res, act):
    """L(z) and the residual energy at every recorded step."""
    E = np.asarray(pclib.layer_energy_trace(params, res.trajectory, act=act))
    return E[:, -1], E[:, :-1].sum(1)


@pytest.mark.parametrize("seed", range(12))
def test_fig4a_inference_trades_output_error_for_hidden_error(seed):
    """Fig. 4A / prop-energy-split: from the feedforward pass with a small step, the first step lowers
    L(z), L(z) <= F <= L(z_0) throughout, F falls at every step, and the residual energy ends above 0.
    Smooth activations (linear, tanh); ReLU is tested below."""
    act = ["linear", "tanh"][seed % 2]
    depth = 2 + seed % 4
    params, x, y = random_net(seed, [8] + [16] * depth + [4], act=act)
    res = pclib.infer(params, x, y, act=act, steps=150, dt=0.05, record=True)
    L_t, E_t = _decomposition_trace(params, res, act)
    F = np.asarray(res.energies)
    tol = 1e-12 * L_t[0]
    assert L_t[1] < L_t[0]
    assert np.all(L_t <= F + tol) and np.all(F <= L_t[0] + tol)
    assert np.all(np.diff(F) <= tol)
    assert E_t[0] == 0.0 and E_t[-1] > 0.0
    np.testing.assert_allclose(L_t + E_t, F, rtol=1e-10)


def test_output_loss_need_not_fall_at_every_step():
    """The stronger reading of Fig. 4A ('L falls at every step') is false: chapter 1's hand-built net
    1-1-2-2 (W_2 = (2, 2), W_3 = diag(3, 1), x = 0, y = (1, 0)). The equilibrium output error is
    S^{-1} e = (1/22, -1/11) by hand (S = [[46, 12], [12, 6]]), so L(z*) = 5/968; inference dips below
    that and rises back, at two step sizes, while F falls monotonically and L stays below its start."""
    params, x, y = theory.leaky_output_network()
    eps_star = pclib.errors(params, theory.linear_equilibrium(params, x, y), act="linear")[-1]
    np.testing.assert_allclose(eps_star, [[1 / 22, -1 / 11]], atol=1e-14)
    H = np.asarray(theory.linear_activity_hessian(params))
    lam_all, Q = np.linalg.eigh(H)
    lam = float(lam_all[-1])
    # the exact gradient flow from the feedforward pass (0): u(t) = Q (1 - e^{-lam t}) Q^T u*, u* = (z_1*, z_2*)
    u_star = np.concatenate([np.asarray(z)[0] for z in theory.linear_equilibrium(params, x, y)[1:-1]])
    t = np.linspace(0, 10, 20001)
    u = (Q @ ((1 - np.exp(-np.outer(t, lam_all))) * (Q.T @ u_star)).T).T
    L_flow = 0.5 * np.sum((np.asarray(y)[0] - u[:, 1:] @ np.asarray(params[2]["W"]).T) ** 2, axis=1)
    assert L_flow.min() < 5 / 968 and np.argmin(L_flow) < len(t) - 1
    lows = []
    for scale, steps in ((1, 1200), (5, 6000)):
        res = pclib.infer(params, x, y, act="linear", steps=steps, dt=0.1 / lam / scale, record=True)
        L_t, _ = _decomposition_trace(params, res, "linear")
        assert np.all(np.diff(np.asarray(res.energies)) <= 0)
        assert L_t.max() <= L_t[0]
        k = int(np.argmin(L_t))
        assert L_t[k] < 5 / 968 < L_t[0] and abs(L_t[-1] - 5 / 968) < 1e-6  # ends at 5/968, after dipping below it
        lows.append(L_t[k])
    # the dip is a property of the flow, not of the step: Euler's minimum approaches the flow's as dt shrinks
    gaps = [abs(low - L_flow.min()) for low in lows]
    assert 4 < gaps[0] / gaps[1] < 6 and gaps[1] < 5e-3 * L_flow.min()  # first order in dt: 5 times smaller


def test_one_output_unit_equilibrium_errors_point_along_backprop():
    """With one output unit S is a scalar, so for linear nets eps* = delta / S exactly (cosine 1 per
    sample); for tanh only the Jacobian mismatch remains, O(s) relative, so the cosine is 1 - O(s^2)."""
    for act, tol in (("linear", 1e-10), ("tanh", 1e-6)):
        params, x, _ = random_net(2, [5, 9, 9, 1], act=act)
        ff = pclib.forward(params, x, act=act)
        y = ff[-1] + 0.01 * jnp.sign(jax.random.normal(jax.random.key(3), ff[-1].shape))
        eps = pclib.errors(params, theory.equilibrium(params, x, y, act=act, method="euler"), act=act)  # to 1e-10
        delta = theory.backprop_errors(params, ff, y - ff[-1], act=act)
        a, b = jnp.concatenate(eps[:-1], axis=1), jnp.concatenate(delta[:-1], axis=1)
        cos = jnp.sum(a * b, 1) / (jnp.linalg.norm(a, axis=1) * jnp.linalg.norm(b, axis=1))
        assert float(1 - cos.min()) < tol, (act, float(1 - cos.min()))
        if act == "linear":  # and the scale is 1/S with S = 1 + |W_3|^2 + |W_3 W_2|^2 (one output unit)
            W3, W2 = np.asarray(params[2]["W"]), np.asarray(params[1]["W"])
            S = 1 + np.sum(W3**2) + np.sum((W3 @ W2) ** 2)
            np.testing.assert_allclose(np.asarray(eps[-1]), np.asarray(y - ff[-1]) / S, rtol=1e-8)


@pytest.mark.parametrize("act", ["tanh", "relu", "linear"])
def test_fixed_prediction_gives_backprop_errors_exactly(act):
    """Millidge, Tschantz & Buckley (2020): with predictions frozen at the feedforward pass the
    equilibrium errors are backprop's deltas, checked against the independent backprop recursion;
    with precisions the recursion is pi_l eps_l = pi_{l+1} J^T eps_{l+1}."""
    params, x, y = random_net(4, [6, 8, 7, 8, 4], act=act)
    ff = pclib.forward(params, x, act=act)
    delta = theory.backprop_errors(params, ff, y - ff[-1], act=act)
    eps = theory.fixed_prediction_errors(params, x, y, act=act, steps=300, dt=0.5)
    assert float(theory.relative_error(eps, delta)) < 1e-12
    pi = jnp.array([0.5, 2.0, 1.5, 0.8])
    eps = theory.fixed_prediction_errors(params, x, y, act=act, steps=600, dt=0.4, precisions=pi)
    # pi_l eps_l = pi_{l+1} J^T eps_{l+1} from pi_L eps_L = pi_L (y - y_hat): backprop's recursion on pi_l eps_l
    scaled = [pi[l] * e for l, e in enumerate(eps)]
    expect = theory.backprop_errors(params, ff, pi[-1] * (y - ff[-1]), act=act)
    assert float(theory.relative_error(scaled, expect)) < 1e-10
    with pytest.raises(ValueError, match="dt < 2 / max"):
        theory.fixed_prediction_errors(params, x, y, act=act, dt=1.0, precisions=pi)


def test_contraction_rate_needs_dt_below_two_over_lambda_sum():
    """Linear inference: the distance to z* shrinks at least like (1 - dt lambda_min)^k when
    dt <= 2/(lambda_min + lambda_max); above that the fastest mode sets the rate dt lambda_max - 1,
    and a start along the top eigenvector beats the bound's prediction of (1 - dt lambda_min)^k."""
    params, x, y = random_net(1, [4, 6, 6, 3], act="linear", n=1)
    H = np.asarray(theory.linear_activity_hessian(params))
    lam, Q = np.linalg.eigh(H)
    star = theory.linear_equilibrium(params, x, y)
    flat_star = np.concatenate([np.asarray(z)[0] for z in star[1:-1]])
    sizes = np.cumsum([6])
    def run(dt, start, steps):
        init = [x] + [jnp.asarray(a)[None] for a in np.split(start, sizes)] + [y]
        traj = pclib.infer(params, x, y, act="linear", steps=steps, dt=dt, init=init, record=True, check=False).trajectory
        h = np.concatenate([np.asarray(z)[:, 0] for z in traj[1:-1]], axis=1)
        return np.linalg.norm(h - flat_star, axis=1)
    dt_ok = 2 / (lam[0] + lam[-1])
    d = run(dt_ok, flat_star + Q[:, 0] + Q[:, -1], 60)
    assert np.all(d <= (1 - dt_ok * lam[0]) ** np.arange(61) * d[0] * (1 + 1e-9))
    dt_big = 0.5 * (dt_ok + 2 / lam[-1])  # between 2/(lambda_min + lambda_max) and the stability limit
    d = run(dt_big, flat_star + Q[:, -1], 20)  # start along the top eigenvector: factor |1 - dt lambda_max| per step
    np.testing.assert_allclose(d[1:] / d[:-1], dt_big * lam[-1] - 1, rtol=1e-6)
    assert d[-1] > (1 - dt_big * lam[0]) ** 20 * d[0]  # so (1 - dt lambda_min)^k is no longer a bound


@pytest.mark.parametrize("seed", range(6))
def test_fig4a_relu_falls_overall_but_not_at_every_step(seed):
    """ReLU is not differentiable at 0, so fixed-step descent can bounce across a kink and raise F
    slightly at single steps; over the run L and F still fall and the residual energy rises."""
    params, x, y = random_net(seed, [8, 16, 16, 16, 4], act="relu")
    res = pclib.infer(params, x, y, act="relu", steps=150, dt=0.05, record=True)
    L_t, E_t = _decomposition_trace(params, res, "relu")
    F = np.asarray(res.energies)
    assert L_t[-1] < L_t[0] and F[-1] < 0.9 * F[0]
    assert E_t[0] == 0.0 and E_t[-1] > 0.0
    assert np.diff(F).max() < 1e-2 * F[0]  # any rise is a small wobble, not divergence


@pytest.mark.parametrize("seed", range(3))
def test_small_output_precision_gives_backprop_errors(seed):
    """Chapter 1, exercise 1 (Whittington & Bogacz 2017): with hidden precisions 1 and output
    precision p -> 0, eps_l*/p -> backprop's delta_l, with an error that shrinks in proportion to p."""
    params, x, y = random_net(seed, [6, 16, 16, 4])
    ff = pclib.forward(params, x)
    delta = theory.backprop_errors(params, ff, y - ff[-1])
    gaps = []
    for p in (1e-2, 1e-3):
        eps = pclib.errors(params, theory.equilibrium(params, x, y, precisions=jnp.array([1.0, 1.0, p]), method="euler"))
        gaps.append(float(theory.relative_error([e / p for e in eps[:-1]], delta[:-1])))
    assert gaps[1] < 0.05 and 5 < gaps[0] / gaps[1] < 20, gaps


@pytest.mark.parametrize("seed", range(3))
def test_euler_stability_threshold_is_two_over_lambda_max(seed):
    """Chapter 1, exercise 2: Euler inference on a linear PCN converges for dt < 2/lambda_max(H)
    and diverges above it (and pclib says so)."""
    params, x, y = random_net(seed, [10, 20, 20, 5], act="linear")
    lam_max = float(np.linalg.eigvalsh(np.asarray(theory.linear_activity_hessian(params))).max())
    res = pclib.infer(params, x, y, act="linear", dt=0.9 * 2 / lam_max, steps=500)
    assert float(res.energies[-1]) < float(res.energies[0])
    with pytest.raises(pclib.InferenceDivergedError):
        pclib.infer(params, x, y, act="linear", dt=1.1 * 2 / lam_max, steps=500)


def test_pcn_schematic_draws_one_value_and_one_error_unit_per_layer():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle, Rectangle

    from pclib import plotting

    fig, ax = plt.subplots()
    plotting.pcn_schematic(ax, n_layers=3)
    assert sum(isinstance(p, Circle) for p in ax.patches) == 4  # x, z_1, z_2, y
    assert sum(isinstance(p, Rectangle) for p in ax.patches) == 3  # eps_1..eps_3
    with pytest.raises(ValueError, match="n_layers must be at least 2"):
        plotting.pcn_schematic(ax, n_layers=1)
    plt.close(fig)


def test_recorded_run_helpers_match_their_definitions():
    """relative_error_trace is relative_error at every recorded step, a recorded step k is the end of a k-step
    run, plotting.deviations is each layer's mean distance from the feedforward pass, and inference_player
    stores one frame per requested step."""
    import matplotlib

    matplotlib.use("Agg")
    from pclib import plotting

    params, x, y = random_net(2, [4, 6, 5, 3], n=5)
    res = pclib.infer(params, x, y, steps=6, dt=0.2, record=True)
    ff = pclib.forward(params, x)
    trace = theory.relative_error_trace(res.trajectory[1:-1], ff[1:-1])
    assert trace.shape == (7,) and trace[0] == 0.0
    for k in (1, 6):
        at_k = pclib.infer(params, x, y, steps=k, dt=0.2).activities
        for z, a in zip(res.trajectory, at_k):
            np.testing.assert_array_equal(z[k], a)
        np.testing.assert_allclose(trace[k], float(theory.relative_error(at_k[1:-1], ff[1:-1])), rtol=1e-12)
    D = plotting.deviations(res.trajectory, ff)
    assert D.shape == (7, 4)
    for k in (0, 4):
        for l in range(4):
            want = np.mean([np.linalg.norm(np.asarray(res.trajectory[l])[k, i] - np.asarray(ff[l])[i]) for i in range(5)])
            np.testing.assert_allclose(D[k, l], want, rtol=1e-12, atol=1e-15)
    html = plotting.inference_player(np.ones((7, 3)), D, [2, 6]).data
    assert html.count("data:image/png;base64") == 2
