"""Chapter 3: target propagation, input-unclamped PC, precision-weighted equilibria, the BP-TP interpolation.

Every check printed by book/chapters/ch03_tp_interpolation.md is tested here on seeded random networks,
against independent computations (forward passes, least squares, jax.hessian, closed forms).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import spearmanr

import pclib
from pclib import theory

# --- helpers -------------------------------------------------------------------------------------


def paper_net(seed, widths, *, n=16, act="linear"):
    """Millidge et al. (2022) App. A.9.1: W ~ N(0, 0.05), x ~ N(1, 1), y ~ N(-1, 1), no biases."""
    ks = jax.random.split(jax.random.key(seed), len(widths) + 1)
    params = [{"W": np.sqrt(0.05) * jax.random.normal(ks[i], (widths[i + 1], widths[i]))}
              for i in range(len(widths) - 1)]
    x = 1.0 + jax.random.normal(ks[-2], (n, widths[0]))
    y = -1.0 + jax.random.normal(ks[-1], (n, widths[-1]))
    return params, x, y


# --- tp_targets -----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("out_act", ["tanh", "linear"])
def test_tp_targets_of_a_reachable_target_are_the_forward_pass(seed, out_act):
    """y = f(x') for some x': the targets are the forward activities of x' (A.5.2), t_0 = x'."""
    params, _, _ = theory.random_invertible_problem(seed, 3, 4, out_act=out_act)
    x_true = 0.4 * jax.random.normal(jax.random.key(seed + 50), (8, 3))
    ff = pclib.forward(params, x_true, act="tanh", out_act=out_act)
    ts = theory.tp_targets(params, ff[-1], act="tanh", out_act=out_act)
    assert len(ts) == len(params) + 1 and ts[-1] is not None
    np.testing.assert_array_equal(ts[-1], ff[-1])
    assert theory.relative_error(ts, ff) < 1e-10


def test_tp_targets_chapter_setting():
    """The chapter's check: width-2, 5-layer tanh nets, x' ~ N(0, 0.25)."""
    for seed in range(5):
        params, _, _ = theory.random_invertible_problem(seed, 2, 4)
        x_other = 0.5 * jax.random.normal(jax.random.key(seed), (16, 2))
        ff = pclib.forward(params, x_other, act="tanh", out_act="tanh")
        assert theory.relative_error(theory.tp_targets(params, ff[-1], act="tanh", out_act="tanh"), ff) < 1e-10


@pytest.mark.parametrize("seed", range(5))
def test_tp_targets_invert_each_layer_on_gaussian_square_nets(seed, net):
    """Linear nets: any y has targets, and each target maps onto the next: W t_{l-1} + b = t_l."""
    params, _, y = net(seed, [4, 4, 4, 4], act="linear")
    ts = theory.tp_targets(params, y, act="linear", out_act="linear")
    for l, layer in enumerate(params, start=1):
        np.testing.assert_allclose(ts[l - 1] @ layer["W"].T + layer["b"], ts[l], atol=1e-9)
    # input unclamped: the targets are a zero-energy point
    assert float(pclib.energy(params, ts, act="linear")) < 1e-20


def test_tp_targets_lowest_skips_unreachable_layers():
    params, x, y = paper_net(0, [5, 5, 5], act="tanh")
    with pytest.raises(ValueError, match="outside tanh's range"):
        theory.tp_targets(params, 10 * y, act="tanh", out_act="linear")
    ts = theory.tp_targets(params, 10 * y, act="tanh", out_act="linear", lowest=1)
    assert ts[0] is None
    np.testing.assert_allclose(ts[1] @ params[1]["W"].T, 10 * y, atol=1e-9)


def test_tp_targets_pinv_is_least_squares_and_min_norm(net):
    """Tall W: least-squares target (np.linalg.lstsq); wide W: an exact pre-image of minimum norm."""
    params, _, y = net(0, [3, 6, 4], act="linear")  # W_1: (6, 3) tall, W_2: (4, 6) wide
    ts = theory.tp_targets(params, y, act="linear", out_act="linear", pinv=True)
    a2 = np.asarray(y - params[1]["b"])
    np.testing.assert_allclose(ts[1] @ params[1]["W"].T, a2, atol=1e-9)  # wide: exact
    mn = np.linalg.lstsq(np.asarray(params[1]["W"]), a2.T, rcond=None)[0].T  # minimum-norm solution
    np.testing.assert_allclose(ts[1], mn, atol=1e-9)
    a1 = np.asarray(ts[1] - params[0]["b"])
    ls = np.linalg.lstsq(np.asarray(params[0]["W"]), a1.T, rcond=None)[0].T
    np.testing.assert_allclose(ts[0], ls, atol=1e-9)


def test_tp_targets_errors(net):
    params, _, y = net(0, [3, 6, 4], act="linear")
    with pytest.raises(ValueError, match="not square.*pinv=True"):
        theory.tp_targets(params, y, act="linear", out_act="linear")
    sq, _, y2 = net(1, [3, 3, 3], act="linear")
    singular = [sq[0], dict(sq[1], W=sq[1]["W"].at[1].set(2 * sq[1]["W"][0]))]
    with pytest.raises(ValueError, match="singular"):
        theory.tp_targets(singular, y2, act="linear", out_act="linear")
    with pytest.raises(ValueError, match="outside tanh's range"):
        theory.tp_targets(sq, y2 + 5.0, act="tanh", out_act="tanh")
    with pytest.raises(ValueError, match="no inverse"):
        theory.tp_targets(sq, y2, act="relu", out_act="linear")
    with pytest.raises(ValueError, match="lowest"):
        theory.tp_targets(sq, y2, act="linear", out_act="linear", lowest=5)
    with pytest.raises(ValueError, match="features"):
        theory.tp_targets(sq, y2[:, :2], act="linear", out_act="linear")


# --- Theorem 3.3: input-unclamped inference converges to the TP targets --------------------------------


@pytest.mark.parametrize("out_act", ["tanh", "linear"])
def test_input_unclamped_inference_converges_to_tp_targets(out_act):
    """5-layer width-2 tanh nets (orthogonal weights): distance < 1e-8 after 20000 steps of dt = 0.25."""
    gaps = []
    for seed in range(6):
        params, x, y = theory.random_invertible_problem(seed, 2, 4, out_act=out_act, n=8, target_scale=0.3)
        ts = theory.tp_targets(params, y, act="tanh", out_act=out_act)
        res = pclib.infer(params, x, y, act="tanh", out_act=out_act, steps=20000, dt=0.25, clamp_input=False)
        gaps.append(float(theory.relative_error(res.activities, ts)))
    assert max(gaps) < 1e-8, gaps


def test_late_convergence_rate_is_the_hessian_lambda_min():
    """Thm (2): with dt <= 2 / (lambda_min + lambda_max) each sample's distance to its targets decays like
    (1 - dt lambda_min(H*))^k."""
    dt, steps = 0.25, 20000
    for seed in (0, 9):
        params, x, y = theory.random_invertible_problem(seed, 2, 4, n=8, target_scale=0.3)
        ts = theory.tp_targets(params, y, act="tanh", out_act="tanh")
        eig = np.linalg.eigvalsh(np.asarray(theory.sample_activity_hessians(
            params, ts, free=range(4), act="tanh", out_act="tanh")))
        lam, lam_max = eig[:, 0], eig[:, -1]
        assert np.all(dt <= 2 / (lam + lam_max))  # part 2's condition for the rate to be 1 - dt lambda_min
        res = pclib.infer(params, x, y, act="tanh", out_act="tanh", steps=steps, dt=dt, clamp_input=False, record=True)
        d = np.sqrt(sum(np.sum((np.asarray(z) - np.asarray(t)) ** 2, -1) for z, t in zip(res.trajectory, ts)))
        i = int(np.argmin(lam))  # the slowest sample
        k = np.where((d[:, i] > 1e-11) & (d[:, i] < 1e-5))[0]
        measured = -(np.log(d[k[-1], i]) - np.log(d[k[0], i])) / ((k[-1] - k[0]) * dt)
        assert abs(measured / lam[i] - 1) < 0.05


@pytest.mark.parametrize("seed, spread", [(0, 1.0), (0, 1.5), (2, 1.5), (3, 1.5)])
def test_euler_rate_is_the_spectral_radius_not_always_one_minus_dt_lambda_min(seed, spread):
    """Thm (2), linear nets (H* constant): the per-step contraction is max_i |1 - dt lambda_i|, which is
    1 - dt lambda_min for dt <= 2 / (lambda_min + lambda_max) and |1 - dt lambda_max| for larger dt < 2 / lambda_max."""
    params, x, y = theory.random_invertible_problem(seed, 2, 2, act="linear", out_act="linear", n=4, spread=spread)
    ts = theory.tp_targets(params, y, act="linear", out_act="linear")
    lam = np.linalg.eigvalsh(np.asarray(theory.sample_activity_hessians(
        params, ts, free=range(2), act="linear", out_act="linear"))[0])
    lo, hi = lam[0], lam[-1]
    assert 1.9 / hi > 2 / (lo + hi)  # so the large step below is in the |1 - dt lambda_max| regime
    for dt in (1.0 / hi, 2 / (lo + hi), 1.9 / hi):
        res = pclib.infer(params, x, y, act="linear", out_act="linear", steps=600, dt=dt, clamp_input=False, record=True)
        d = np.sqrt(sum(np.sum((np.asarray(z) - np.asarray(t)) ** 2, -1) for z, t in zip(res.trajectory, ts)))
        radius = np.max(np.abs(1 - dt * lam))
        # per sample, over the late stretch 1e-12 < d < 1e-8, where the slowest mode dominates (on these seeds the
        # largest |1 - dt lambda_i| is either shared or >= 4% above the next; seed 4 with spread 1.5, at 1%, is not)
        for i in range(d.shape[1]):
            k = np.where((d[:, i] > 1e-12) & (d[:, i] < 1e-8))[0]
            assert k[-1] - k[0] >= 20
            measured = (d[k[-1], i] / d[k[0], i]) ** (1 / (k[-1] - k[0]))
            np.testing.assert_allclose(measured, radius, rtol=2e-3)
        if dt <= 2 / (lo + hi) * (1 + 1e-12):
            np.testing.assert_allclose(radius, 1 - dt * lo, rtol=1e-12)
        else:
            assert radius > 1 - dt * lo + 0.05


@pytest.mark.parametrize("seed", range(4))
def test_tp_targets_are_the_only_critical_point_and_hessian_is_gauss_newton(seed):
    """At the targets: zero energy, zero gradient, Hessian = sum_l pi_l A_l^T A_l (jacfwd of the errors) > 0."""
    params, _, y = theory.random_invertible_problem(seed, 2, 4, n=4, target_scale=0.3)
    pi = jnp.array([1.0, 0.5, 2.0, 1.5])
    ts = theory.tp_targets(params, y, act="tanh", out_act="tanh")
    assert float(pclib.energy(params, ts, act="tanh", out_act="tanh", precisions=pi)) < 1e-25
    H = theory.sample_activity_hessians(params, ts, free=range(4), act="tanh", out_act="tanh", precisions=pi)
    for i in range(4):
        def errs(flat, i=i):
            zs = [flat[2 * l:2 * l + 2][None] for l in range(4)] + [ts[-1][i:i + 1]]
            return jnp.concatenate([jnp.sqrt(p) * e[0] for p, e in
                                    zip(pi, pclib.errors(params, zs, act="tanh", out_act="tanh"))])
        A = jax.jacfwd(errs)(jnp.concatenate([t[i] for t in ts[:-1]]))
        np.testing.assert_allclose(H[i], A.T @ A, atol=1e-10)
        assert np.linalg.eigvalsh(np.asarray(H[i]))[0] > 0
        g = jax.grad(lambda f: jnp.sum(errs(f) ** 2))(jnp.concatenate([t[i] for t in ts[:-1]]))
        assert float(jnp.max(jnp.abs(g))) < 1e-12


@pytest.mark.parametrize("seed", range(4))
def test_lambda_min_is_at_most_the_whole_jacobian_sigma_min_squared(seed):
    """Unit precisions: lambda_min(H*) <= sigma_min(J_L ... J_1)^2 at the targets, for every sample."""
    params, _, y = theory.random_invertible_problem(seed, 3, 4, n=4, target_scale=0.5, spread=2.0)
    ts = theory.tp_targets(params, y, act="tanh", out_act="tanh")
    H = theory.sample_activity_hessians(params, ts, free=range(4), act="tanh", out_act="tanh")
    for i in range(4):
        J = jax.jacfwd(lambda z: pclib.predict(params, z[None], act="tanh", out_act="tanh")[0])(ts[0][i])
        s_min = np.linalg.svd(np.asarray(J), compute_uv=False).min()
        assert np.linalg.eigvalsh(np.asarray(H[i]))[0] <= s_min**2 * (1 + 1e-9)


def test_critical_point_argument_bottom_up():
    """Any point with zero gradient in (z_0..z_{L-1}) has all errors zero: check a non-target point is not critical."""
    params, x, y = theory.random_invertible_problem(0, 2, 3, n=4)
    zs = pclib.forward(params, x, act="tanh", out_act="tanh")
    zs[-1] = y
    g = jax.grad(lambda z0: pclib.energy(params, [z0] + zs[1:], act="tanh", out_act="tanh"))(zs[0])
    # at the feedforward pass of x only the output error is non-zero, and it pushes on z_{L-1}, not z_0
    assert float(jnp.max(jnp.abs(g))) < 1e-14
    gL = jax.grad(lambda z: pclib.energy(params, zs[:-2] + [z, y], act="tanh", out_act="tanh"))(zs[-2])
    assert float(jnp.max(jnp.abs(gL))) > 1e-3


# --- Theorem 3.5: the precision-weighted linear equilibrium ---------------------------------------------


@pytest.mark.parametrize("seed", range(8))
def test_precision_weighted_linear_equilibrium_matches_iterative_inference(seed, net):
    rng = np.random.default_rng(seed)
    widths = [int(w) for w in rng.integers(2, 7, size=int(rng.integers(3, 6)))]
    params, x, y = net(seed, widths, act="linear", n=8)
    pi = jnp.asarray(10.0 ** rng.uniform(-1, 1, size=len(params)))
    star = theory.linear_equilibrium(params, x, y, precisions=pi)
    H = np.asarray(theory.linear_activity_hessian(params, precisions=pi))
    lam = np.linalg.eigvalsh(H)
    dt = 1.0 / lam[-1]
    steps = int(np.ceil(np.log(1e-12) / np.log(1 - dt * lam[0])))
    res = pclib.infer(params, x, y, act="linear", precisions=pi, steps=steps, dt=dt)
    assert theory.relative_error(res.activities[1:-1], star[1:-1]) < 1e-8
    # the layerwise form of Thm 3.5 (with biases) holds at the equilibrium
    for l in range(1, len(params)):
        lo, up = params[l - 1], params[l]
        r = pi[l] / pi[l - 1]
        A = np.eye(lo["W"].shape[0]) + r * np.asarray(up["W"].T @ up["W"])
        rhs = star[l - 1] @ lo["W"].T + lo["b"] + r * (star[l + 1] - up["b"]) @ up["W"]
        np.testing.assert_allclose(star[l], np.linalg.solve(A, np.asarray(rhs).T).T, atol=1e-9)


# --- precisions from ratios and lambda -------------------------------------------------------------


def test_ratio_and_lambda_precisions(net):
    np.testing.assert_allclose(theory.ratio_precisions(10.0, 4, scheme="geometric"), [1e-3, 1e-2, 1e-1, 1.0])
    np.testing.assert_allclose(theory.ratio_precisions(0.1, 3, scheme="output"), [1.0, 1.0, 0.1])
    np.testing.assert_allclose(theory.ratio_precisions(10.0, 3, scheme="output"), [0.1, 0.1, 1.0])
    params, x, y = net(0, [4, 6, 6, 3])
    zs = pclib.infer(params, x, y, steps=5, dt=0.1).activities
    # squared errors by hand from the activities, not through pclib's energies
    fs = [np.tanh, np.tanh, lambda a: a]
    sq = [0.5 * np.mean(np.sum((np.asarray(zs[l + 1]) - fs[l](np.asarray(zs[l]) @ np.asarray(p["W"]).T
                                                               + np.asarray(p["b"]))) ** 2, axis=1))
          for l, p in enumerate(params)]
    for lam in (0.0, 0.3, 0.9, 1.0):
        F = pclib.energy(params, zs, precisions=theory.lambda_precisions(lam, 3))
        np.testing.assert_allclose(F, lam * sq[-1] + (1 - lam) * sum(sq[:-1]), rtol=1e-12)
    with pytest.raises(ValueError, match="scheme"):
        theory.ratio_precisions(1.0, 3, scheme="nope")
    with pytest.raises(ValueError, match="positive"):
        theory.ratio_precisions(0.0, 3)
    with pytest.raises(ValueError, match="lambda"):
        theory.lambda_precisions(1.5, 3)


def test_cosine_and_angle():
    a = [jnp.array([[1.0, 2.0]]), jnp.array([[3.0]])]
    assert abs(float(theory.angle(a, [2 * v for v in a]))) < 1e-6
    assert abs(float(theory.angle(a, [-v for v in a])) - 180) < 1e-6
    assert abs(float(theory.angle([jnp.array([1.0, 0.0])], [jnp.array([0.0, 3.0])])) - 90) < 1e-12
    with pytest.raises(ValueError, match="same leaves"):
        theory.cosine(a, a[:1])


# --- the interpolation -----------------------------------------------------------------------------------

RATIOS = np.logspace(-5, 5, 21)


@pytest.mark.parametrize("seed", range(10))
def test_one_hidden_layer_linear_path_is_monotone(seed):
    """Proved in the chapter: z*(rho) - t = (I + rho W^T W)^{-1}(W_1 x - t); all four trends strictly monotone."""
    params, x, y = paper_net(seed, [5, 5, 5])
    r = theory.interpolation_sweep(params, x, y, RATIOS, act="linear", out_act="linear")
    assert np.all(np.diff(r["dist_tp"]) < 0) and np.all(np.diff(r["angle_tp"]) < 0)
    assert np.all(np.diff(r["dist_ff"]) > 0) and np.all(np.diff(r["angle_bp"]) > 0)
    # the closed form of the path, independently, and the bounds that follow from it
    W, a = params[1]["W"], x @ params[0]["W"].T
    t = np.linalg.solve(np.asarray(W), np.asarray(y).T).T
    s2 = np.linalg.svd(np.asarray(W), compute_uv=False) ** 2
    gap = np.linalg.norm(a - t)
    np.testing.assert_array_less(r["dist_tp"], gap / (1 + RATIOS * s2.min()) / np.linalg.norm(t) * (1 + 1e-9))
    np.testing.assert_array_less(r["dist_ff"], gap * RATIOS * s2.max() / (1 + RATIOS * s2.max()) / np.linalg.norm(a) * (1 + 1e-9))
    assert r["angle_bp"][0] < 0.01
    for rho in (1e-3, 1.0, 1e3):
        z = theory.linear_equilibrium(params, x, y, precisions=jnp.array([1.0, rho]))[1]
        pred = t + np.linalg.solve(np.eye(5) + rho * np.asarray(W.T @ W), np.asarray(a - t).T).T
        np.testing.assert_allclose(z, pred, atol=1e-8)


@pytest.mark.parametrize("seed", range(3))
def test_one_hidden_layer_path_when_t_minus_a_is_in_one_eigenspace(seed):
    """The theorem's equality case: t - a along one eigenvector of M = W_2^T W_2 (for every sample). The
    distances stay strictly monotone (part 1 needs only a != t), while both angles are 0 at every ratio."""
    params, x, _ = paper_net(seed, [5, 5, 5])
    W = np.asarray(params[1]["W"])
    a = np.asarray(x @ params[0]["W"].T)
    v = np.linalg.eigh(W.T @ W)[1][:, 2]  # a middle eigenvector
    c = np.asarray(jax.random.normal(jax.random.key(seed + 7), (x.shape[0], 1)))
    y = jnp.asarray((a + c * v) @ W.T)  # so that t = W^{-1} y = a + c v
    r = theory.interpolation_sweep(params, x, y, RATIOS, act="linear", out_act="linear")
    assert np.all(np.diff(r["dist_tp"]) < 0) and np.all(np.diff(r["dist_ff"]) > 0)
    assert np.max(r["angle_tp"]) < 1e-4 and np.max(r["angle_bp"]) < 1e-4
    # a generic t - a (two eigen-directions) makes both angle trends strict
    y2 = jnp.asarray((a + c * v + c * np.linalg.eigh(W.T @ W)[1][:, 0]) @ W.T)
    r2 = theory.interpolation_sweep(params, x, y2, RATIOS, act="linear", out_act="linear")
    assert np.all(np.diff(r2["angle_tp"]) < 0) and np.all(np.diff(r2["angle_bp"]) > 0)


def ridge_path_dist_tp(params, x, y, ratios):
    """|z_1*(rho) - t| / |t| from the closed form t + (I + rho M)^{-1}(a - t), a = tanh(W_1 x), M = W_2^T W_2:
    with the input clamped and a linear output, a tanh hidden layer's energy is this quadratic (Thm ridge-path)."""
    a, W = np.tanh(np.asarray(x) @ np.asarray(params[0]["W"]).T), np.asarray(params[1]["W"])
    t = np.linalg.solve(W, np.asarray(y).T).T
    M = W.T @ W
    return np.array([np.linalg.norm(np.linalg.solve(np.eye(len(M)) + r * M, (a - t).T).T) / np.linalg.norm(t)
                     for r in ratios])


@pytest.mark.parametrize("seed", range(4))
def test_one_hidden_layer_tanh_sweep_is_certified_and_on_the_ridge_path(seed):
    """The tanh sweep (tol, warm starts): every point certified, every distance equal to the closed form, and so
    all four trends strictly monotone (seed 0 has a small sigma_min(W_2): |z* - t|/|t| = 5.2e-3 at rho = 1e5)."""
    params, x, y = paper_net(seed, [5, 5, 5], act="tanh")
    r = theory.interpolation_sweep(params, x, y, RATIOS[::2], act="tanh", out_act="linear", tol="auto", max_steps=200)
    assert np.all(r["residual"] < r["tol"])
    np.testing.assert_allclose(r["tol"], [1e-10] * len(r["tol"]))  # precisions are normalised to max 1
    np.testing.assert_allclose(r["dist_tp"], ridge_path_dist_tp(params, x, y, RATIOS[::2]), rtol=1e-8)
    assert np.all(np.diff(r["dist_tp"]) < 0) and np.all(np.diff(r["angle_tp"]) < 0)
    assert np.all(np.diff(r["dist_ff"]) > 0) and np.all(np.diff(r["angle_bp"]) > 0)
    assert r["angle_bp"][0] < 0.01


def test_sweep_residual_is_the_activity_gradient_and_can_fail():
    """equilibrium_residual at the feedforward pass of a 1-hidden-layer net with linear output is
    max |pi_2 W_2^T (y - W_2 a)| (the hidden errors vanish there); and a truncated sweep is not certified."""
    params, x, y = paper_net(0, [5, 5, 5], act="tanh")
    ff = pclib.forward(params, x)
    pi = jnp.array([0.5, 2.0])
    W = np.asarray(params[1]["W"])
    expected = np.max(np.abs(2.0 * (np.asarray(y) - np.asarray(ff[1]) @ W.T) @ W))
    zs = [*ff[:-1], y]  # the feedforward pass with the output clamped to y
    assert theory.equilibrium_residual(params, zs, precisions=pi) == pytest.approx(expected, rel=1e-12)
    r = theory.interpolation_sweep(params, x, y, [1e3, 1e5], act="tanh", out_act="linear", tol=None, max_steps=1,
                                   method="euler")
    assert np.all(np.isnan(r["tol"])) and np.all(r["residual"] > 1e-3)
    with pytest.raises(pclib.inference.NotConvergedError):
        theory.interpolation_sweep(params, x, y, [1e5], act="tanh", out_act="linear", tol=1e-10, max_steps=2)


def deep_net(seed):
    """The chapter's deep linear nets: 4 square layers of width 5, singular values in [1/2, 2]."""
    return theory.random_invertible_problem(seed, 5, 4, act="linear", out_act="linear", n=8, target_scale=1.0,
                                            spread=2.0)


DEEP_RATIOS = np.logspace(-3, 3, 13)


@pytest.mark.parametrize("seed", range(8))
def test_deep_linear_geometric_sweep_is_monotone_on_well_conditioned_nets(seed):
    """Observed on the chapter's nets (not proved): all four trends strictly monotone."""
    params, x, y = deep_net(seed)
    r = theory.interpolation_sweep(params, x, y, DEEP_RATIOS, act="linear", out_act="linear")
    assert np.all(np.diff(r["dist_tp"]) < 0) and np.all(np.diff(r["angle_tp"]) < 0)
    assert np.all(np.diff(r["dist_ff"]) > 0) and np.all(np.diff(r["angle_bp"]) > 0)
    assert r["angle_bp"][0] < 0.5 and r["angle_tp"][-1] < 0.5 and r["dist_tp"][-1] < 0.01
    out = theory.interpolation_sweep(params, x, y, DEEP_RATIOS, act="linear", out_act="linear", scheme="output")
    assert out["dist_tp"][-1] > 0.2


def test_deep_linear_counterexample_to_strict_monotonicity():
    """A Gaussian 5-5-5-5-5 net (seed 1): the angle to TP first rises to an interior peak, then falls strictly."""
    params, x, y = pclib.random_problem(1, [5] * 5, act="linear", n=8)
    r = theory.interpolation_sweep(params, x, y, np.logspace(-2, 2, 17), act="linear", out_act="linear")
    peak = int(np.argmax(r["angle_tp"]))
    assert 0 < peak < len(r["ratios"]) - 1
    assert r["angle_tp"][peak] - r["angle_tp"][0] > 0.5
    assert np.all(np.diff(r["angle_tp"][peak:]) < 0)
    assert r["angle_tp"][-1] < r["angle_tp"][0] - 30
    assert spearmanr(r["ratios"], r["angle_tp"])[0] < 0


@pytest.mark.parametrize("seed", range(5))
def test_high_ratio_limits_geometric_vs_output(seed):
    """rho -> inf: geometric precisions reach every hidden TP target; the output ratio only the top one."""
    params, x, y = deep_net(seed)
    ts = theory.tp_targets(params, y, act="linear", out_act="linear")
    geo = theory.linear_equilibrium(params, x, y, precisions=theory.ratio_precisions(1e4, 4))
    out = theory.linear_equilibrium(params, x, y, precisions=theory.ratio_precisions(1e8, 4, scheme="output"))
    assert theory.relative_error(geo[1:-1], ts[1:-1]) < 1e-3
    assert theory.relative_error(out[3], ts[3]) < 1e-6
    assert theory.relative_error(out[1], ts[1]) > 0.1
    # part 3: the lower layers settle at the equilibrium of the truncated network clamped to (x, t_{L-1})
    lower = theory.linear_equilibrium(params[:-1], x, ts[3])
    assert theory.relative_error(out[1:3], lower[1:3]) < 1e-6


def test_orthogonal_weights_make_bp_and_tp_agree_in_linear_nets():
    """Why the chapter's deep sweep uses spread > 1: with orthogonal W, W^{-1} = W^T, one hidden layer."""
    params, x, y = theory.random_invertible_problem(0, 5, 2, act="linear", out_act="linear", n=8)
    r = theory.interpolation_sweep(params, x, y, [1e-3, 1.0, 1e3], act="linear", out_act="linear")
    assert np.max(r["angle_tp"]) < 1e-5 and np.max(r["angle_bp"]) < 1e-5


def test_random_invertible_problem_conditioning():
    for spread in (1.0, 2.0, 5.0):
        params, _, _ = theory.random_invertible_problem(3, 4, 3, spread=spread, gain=1.5)
        for p in params:
            assert float(jnp.linalg.cond(p["W"])) <= spread**2 * (1 + 1e-9)
    with pytest.raises(ValueError, match="spread"):
        theory.random_invertible_problem(0, 2, 2, spread=0.5)


def test_orthogonal_nets_are_better_conditioned_than_gaussian_at_the_targets():
    """The chapter's comparison of lambda_min of the Hessian at the TP targets (10 seeds)."""
    def lam_min(params, y):
        ts = theory.tp_targets(params, y, act="tanh", out_act="tanh")
        H = theory.sample_activity_hessians(params, ts, free=range(len(params)), act="tanh", out_act="tanh")
        return float(np.linalg.eigvalsh(np.asarray(H))[:, 0].min())

    orth, gaussian = [], []
    for seed in range(10):
        params, _, y = theory.random_invertible_problem(seed, 2, 4, n=8, target_scale=0.3)
        gauss = pclib.init_mlp(jax.random.key(seed), [2] * 5)
        y_g = pclib.predict(gauss, 0.3 * jax.random.normal(jax.random.key(seed + 1), (8, 2)), act="tanh", out_act="tanh")
        orth.append(lam_min(params, y))
        gaussian.append(lam_min(gauss, y_g))
        assert orth[-1] > gaussian[-1]
    assert np.median(orth) > 10 * np.median(gaussian)


def test_gaussian_nets_with_larger_targets_need_billions_of_steps():
    """The chapter's claim: inputs of scale 1, ten Gaussian 2x5 tanh nets: some sample has lambda_min(H*) < 1e-9
    and lambda_max / (2 lambda_min) > 1e9; lambda_min cross-checked as sigma_min(A)^2 with A = d eps / dz (jacfwd)."""
    best = None
    for seed in range(10):
        gauss = pclib.init_mlp(jax.random.key(seed), [2] * 5)
        y = pclib.predict(gauss, 1.0 * jax.random.normal(jax.random.key(seed + 1), (8, 2)), act="tanh", out_act="tanh")
        ts = theory.tp_targets(gauss, y, act="tanh", out_act="tanh")
        eig = np.linalg.eigvalsh(np.asarray(theory.sample_activity_hessians(
            gauss, ts, free=range(4), act="tanh", out_act="tanh")))
        i = int(np.argmin(eig[:, 0]))
        if best is None or eig[i, 0] < best[0]:
            best = (eig[i, 0], eig[i, -1], gauss, ts, i)
    lam_min, lam_max, gauss, ts, i = best
    assert lam_min < 1e-9 and lam_max / (2 * lam_min) > 1e9

    def errs(flat):
        zs = [flat[2 * l:2 * l + 2][None] for l in range(4)] + [ts[-1][i:i + 1]]
        return jnp.concatenate([e[0] for e in pclib.errors(gauss, zs, act="tanh", out_act="tanh")])

    A = jax.jacfwd(errs)(jnp.concatenate([t[i] for t in ts[:-1]]))
    s = np.linalg.svd(np.asarray(A), compute_uv=False)
    np.testing.assert_allclose(s.min() ** 2, lam_min, rtol=1e-3)
    np.testing.assert_allclose(s.max() ** 2, lam_max, rtol=1e-9)


@pytest.mark.parametrize("L", [1, 2, 4, 8])
def test_exercise_identity_chain_hessian(L):
    """Exercise 1: identity weights, lambda_min(H*) = 4 sin^2(pi / (2(2L+1)))."""
    params = [{"W": jnp.eye(1), "b": jnp.zeros(1)} for _ in range(L)]
    ts = theory.tp_targets(params, jnp.ones((1, 1)), act="linear", out_act="linear")
    H = theory.sample_activity_hessians(params, ts, free=range(L), act="linear", out_act="linear")[0]
    lam = np.linalg.eigvalsh(np.asarray(H))
    k = np.arange(1, L + 1)
    np.testing.assert_allclose(lam, np.sort(4 * np.sin((2 * k - 1) * np.pi / (2 * (2 * L + 1))) ** 2), atol=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_low_ratio_errors_are_backprop(seed, net):
    """rho -> 0: pi_l eps*_l / pi_L -> delta_l (BP) and z* -> feedforward, for tanh nets."""
    params, x, y = net(seed, [4, 6, 6, 3], n=8)
    ff = pclib.forward(params, x)
    delta = theory.backprop_errors(params, ff, y - ff[-1])
    pi = theory.ratio_precisions(1e-4, 3, scheme="output")
    zs = theory.equilibrium(params, x, y, precisions=pi)  # certified: raises unless max|dF_i/dz| < tol
    eps = pclib.errors(params, zs)
    assert theory.relative_error([e / pi[-1] for e in eps[:-1]], delta[:-1]) < 1e-3
    assert theory.relative_error(eps[-1], delta[-1]) < 1e-3


# --- generalised energies (App. A.8) ------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_generalised_energy_adjoint_recursion(seed, net):
    """With h(e) = log(1 + e^2)/2, the errors pi_l h'(eps_l) obey backprop's recursion at equilibrium."""
    params, x, y = net(seed, [5, 8, 8, 3], n=8)
    pi = jnp.array([1.0, 2.0, 0.5])
    h = lambda e: 0.5 * jnp.log1p(e**2)
    zs = theory.generalised_infer(params, x, y, h=h, precisions=pi, steps=5000, dt=0.1)
    e = [p * jax.vmap(jax.vmap(jax.grad(h)))(ep) for p, ep in zip(pi, pclib.errors(params, zs))]
    np.testing.assert_allclose(e[0], [p * ep / (1 + ep**2) for p, ep in zip(pi, pclib.errors(params, zs))][0])
    adj = theory.backprop_errors(params, zs, e[-1])
    assert theory.relative_error(e[:-1], adj[:-1]) < 1e-8

    def residual(zs):
        e = [p * ep / (1 + ep**2) for p, ep in zip(pi, pclib.errors(params, zs))]
        return float(theory.relative_error(e[:-1], theory.backprop_errors(params, zs, e[-1])[:-1]))

    # not yet at equilibrium (10 steps: the hidden errors are non-zero), the recursion fails
    early = theory.generalised_infer(params, x, y, h=h, precisions=pi, steps=10, dt=0.1, method="euler", tol=None)
    assert float(jnp.abs(pclib.errors(params, early)[0]).max()) > 1e-3
    assert residual(early) > 0.2
    # at the squared-error equilibrium, pi eps obeys the recursion but pi h'(eps) does not
    zq = theory.equilibrium(params, x, y, precisions=pi)
    eq = [p * ep for p, ep in zip(pi, pclib.errors(params, zq))]
    assert theory.relative_error(eq[:-1], theory.backprop_errors(params, zq, eq[-1])[:-1]) < 1e-8
    assert residual(zq) > 0.3
    # at the feedforward pass the hidden errors are all zero, so this residual is exactly 1 for any net:
    # the reason the checks above are made elsewhere
    ff = pclib.forward(params, x)
    ff[-1] = y
    assert residual(ff) == pytest.approx(1.0, abs=1e-15)


def test_generalised_quadratic_is_pc(net):
    params, x, y = net(0, [5, 8, 8, 3], n=8)
    pi = jnp.array([1.0, 2.0, 0.5])
    quadratic = lambda e: 0.5 * e**2
    zq = theory.generalised_infer(params, x, y, h=quadratic, precisions=pi, steps=500, dt=0.1, method="euler", tol=None)
    zi = pclib.infer(params, x, y, precisions=pi, steps=500, dt=0.1).activities
    assert theory.relative_error(zq, zi) < 1e-12
    # solved to the default tolerance (Newton-CG), it is the squared-error equilibrium
    star = theory.equilibrium(params, x, y, precisions=pi, method="euler", tol=1e-12, max_steps=20000, dt=0.1)
    assert theory.relative_error(theory.generalised_infer(params, x, y, h=quadratic, precisions=pi), star) < 1e-8
    np.testing.assert_allclose(theory.generalised_energy(params, zi, h=lambda e: 0.5 * e**2, precisions=pi),
                               pclib.energy(params, zi, precisions=pi), rtol=1e-12)
    with pytest.raises(FloatingPointError, match="smaller dt"):
        theory.generalised_infer(params, x, y, h=lambda e: 0.5 * e**2, steps=50, dt=5.0, method="euler", tol=None)


# --- the interpolation during inference (the paper's Figs. 2 right and 3) ------------------------------------------


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("rho", [1e-3, 1e3])
def test_interpolation_course_first_step_is_backprop_and_end_is_the_certified_equilibrium(seed, rho):
    """After one Euler step from the feedforward pass, pi_1 eps_1 = dt pi_1 pi_2 delta_1 exactly (chapter 1's first-steps
    result), so the angle to backprop is 0 and the angle to TP is angle(delta_1, t - a); the end of a long enough run has
    the measures of the certified equilibrium (interpolation_sweep with a tolerance). 40000 steps: seed 0 has
    sigma_min(W_2)^2 = 1.8e-3, so at rho = 1e3 the slowest mode contracts by only ~1 - 1.4e-3 per step."""
    params, x, y = paper_net(seed, [5, 5, 5], act="tanh")
    pi = theory.ratio_precisions(rho, 2)
    res = pclib.infer(params, x, y, precisions=pi, steps=40000, dt=pclib.equilibria.euler_dt(params, pi), record=True)
    assert float(res.residual) < 1e-10
    c = theory.interpolation_course(params, res.trajectory, precisions=pi)
    assert np.isnan(c["angle_bp"][0]) and np.isnan(c["angle_tp"][0]) and c["dist_ff"][0] == 0
    assert c["angle_bp"][1] < 1e-5
    # independently in numpy: delta_1 = W_2^T (y - W_2 a) and t = W_2^{-1} y
    W2, a = np.asarray(params[1]["W"]), np.tanh(np.asarray(x) @ np.asarray(params[0]["W"]).T)
    delta = (np.asarray(y) - a @ W2.T) @ W2
    t = np.linalg.solve(W2, np.asarray(y).T).T
    cos = np.sum(delta * (t - a)) / np.linalg.norm(delta) / np.linalg.norm(t - a)
    assert c["angle_tp"][1] == pytest.approx(np.degrees(np.arccos(cos)), abs=1e-6)
    k = 1234  # one step by hand
    z = np.asarray(res.trajectory[1][k])
    assert c["dist_tp"][k] == pytest.approx(np.linalg.norm(z - t) / np.linalg.norm(t), rel=1e-12)
    assert c["dist_ff"][k] == pytest.approx(np.linalg.norm(z - a) / np.linalg.norm(a), rel=1e-12)
    sweep = theory.interpolation_sweep(params, x, y, [rho], act="tanh", out_act="linear", tol="auto", max_steps=200)
    for m in ("angle_bp", "angle_tp", "dist_ff", "dist_tp"):
        assert c[m][-1] == pytest.approx(sweep[m][0], abs=1e-6)


def test_interpolation_course_chapter_claims():
    """The chapter's course (paper net 1): at rho = 1e-3 the errors stay within 0.1 degree of backprop's and the
    activities within 1% of the feedforward pass; at rho = 1e3 the angle to TP ends below 2 degrees."""
    params, x, y = paper_net(1, [5, 5, 5], act="tanh")
    out = {}
    for rho in (1e-3, 1e3):
        pi = theory.ratio_precisions(rho, 2)
        res = pclib.infer(params, x, y, precisions=pi, steps=4000, dt=pclib.equilibria.euler_dt(params, pi), record=True)
        out[rho] = theory.interpolation_course(params, res.trajectory, precisions=pi, every=7)
    assert np.nanmax(out[1e-3]["angle_bp"]) < 0.1 and out[1e-3]["dist_ff"].max() < 0.01
    assert out[1e3]["angle_tp"][-1] < 2.0
    np.testing.assert_array_equal(out[1e3]["steps"][:3], [0, 7, 14])


# --- non-square output weights: the ridge path to the difference target -------------------------------------------


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("widths", [[5, 3, 5], [5, 8, 3], [4, 6, 2]])
def test_nonsquare_one_hidden_layer_path_goes_to_the_difference_target(seed, widths, net):
    """Prop. nonsquare, with biases: z*(rho) = t_D + (I + rho M)^{-1}(a - t_D), t_D = a + W^+(y - b - W a), in numpy;
    the trends against t_D are strictly monotone; tall W: t_D is the pseudo-inverse target; wide W: the distance to
    the pseudo-inverse target tends to |(I - W^+ W) a|."""
    params, x, y = net(seed, widths, act="linear", n=6)
    W, b2 = np.asarray(params[1]["W"]), np.asarray(params[1]["b"])
    a = np.asarray(x) @ np.asarray(params[0]["W"]).T + np.asarray(params[0]["b"])
    Wp = np.linalg.pinv(W)
    tD = a + (np.asarray(y) - b2 - a @ W.T) @ Wp.T
    M = W.T @ W
    for rho in (1e-3, 1.0, 1e3):
        z = theory.linear_equilibrium(params, x, y, precisions=jnp.array([1.0, rho]))[1]
        np.testing.assert_allclose(z, tD + np.linalg.solve(np.eye(len(M)) + rho * M, (a - tD).T).T, atol=1e-9)
    ff = pclib.forward(params, x, act="linear")
    got = theory.tp_targets(params, y, act="linear", out_act="linear", pinv=True, lowest=1, feedforward=ff)[1]
    np.testing.assert_allclose(got, tD, atol=1e-10)
    r = theory.interpolation_sweep(params, x, y, RATIOS, act="linear", out_act="linear", pinv=True, difference=True)
    assert np.all(np.diff(r["dist_tp"]) < 0) and np.all(np.diff(r["angle_tp"]) < 0)
    assert np.all(np.diff(r["dist_ff"]) > 0) and np.all(np.diff(r["angle_bp"]) > 0)
    t = (np.asarray(y) - b2) @ Wp.T
    plain = theory.interpolation_sweep(params, x, y, [1e6], act="linear", out_act="linear", pinv=True)
    null = np.linalg.norm(a - a @ W.T @ Wp.T)  # |(I - W^+ W) a|
    if widths[1] <= widths[2]:  # tall: the difference target is the pseudo-inverse target
        np.testing.assert_allclose(tD, t, atol=1e-10)
        assert null < 1e-10
    else:  # wide: a plateau at the null-space part of a
        assert null > 1e-2 * np.linalg.norm(t)
        assert plain["dist_tp"][0] == pytest.approx(null / np.linalg.norm(t), rel=1e-5)


def test_difference_targets_equal_exact_targets_for_square_invertible_layers(net):
    """t_{l-1} = z_hat_{l-1} + W^{-1}(f^{-1}(t_l) - W z_hat_{l-1} - b) = W^{-1}(f^{-1}(t_l) - b) when W is invertible."""
    params, _, y = theory.random_invertible_problem(0, 3, 4, out_act="tanh", n=6, spread=1.5)
    x = jax.random.normal(jax.random.key(3), (6, 3))
    ff = pclib.forward(params, x, act="tanh", out_act="tanh")
    exact = theory.tp_targets(params, y, act="tanh", out_act="tanh")
    for pinv in (False, True):
        diff = theory.tp_targets(params, y, act="tanh", out_act="tanh", feedforward=ff, pinv=pinv)
        assert theory.relative_error(diff, exact) < 1e-10


# --- the ridge path in the plane of delta_1 and t - a -------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("widths", [[5, 2, 2], [5, 5, 5]])
def test_ridge_path_starts_along_delta_and_ends_along_the_tp_move(seed, widths):
    """The chapter's picture: the move m(rho) = z*(rho) - a = (I + rho M)^{-1} rho M (t - a) leaves a along delta_1 and
    ends along t - a. Bounds from the closed form: sin angle(m, rho delta_1) <= rho s_max at the small end, and
    sin angle(m, t - a) <= |z* - t| / |t - a| <= 1 / (1 + rho s_min) at the large end; on the chapter's sample
    (seed 1, sample 0) the angles at 1e-5 and 1e5 are below 0.01 and 0.5 degrees."""
    params, x, y = paper_net(seed, widths)
    a = np.asarray(x @ params[0]["W"].T)
    W = np.asarray(params[1]["W"])
    t = np.linalg.solve(W, np.asarray(y).T).T
    delta = (np.asarray(y) - a @ W.T) @ W
    s2 = np.linalg.svd(W, compute_uv=False) ** 2

    def deg(u, v):
        return np.degrees(np.arccos(np.clip(u @ v / np.linalg.norm(u) / np.linalg.norm(v), -1, 1)))

    for i in range(3):
        lo, hi = (np.asarray(theory.linear_equilibrium(params, x, y, precisions=jnp.array([1.0, rho]))[1][i]) - a[i]
                  for rho in (1e-5, 1e5))
        assert deg(lo, delta[i]) <= np.degrees(np.arcsin(min(1.0, 1e-5 * s2.max()))) + 1e-9
        assert deg(hi, t[i] - a[i]) <= np.degrees(np.arcsin(1 / (1 + 1e5 * s2.min()))) + 1e-9
        assert deg(delta[i], t[i] - a[i]) > 1.0  # the two directions differ, so the picture is not degenerate
        if seed == 1 and i == 0:  # the chapter's sample
            assert deg(lo, delta[i]) < 0.01 and deg(hi, t[i] - a[i]) < 0.5


# --- per-layer measures of the deep sweeps -------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["geometric", "output"])
def test_per_layer_measures_are_the_measures_of_each_layer(scheme):
    """Each layer's entry, recomputed in numpy from linear_equilibrium at one ratio; one hidden layer: = the total."""
    params, x, y = deep_net(2)
    rho = 3.0
    r = theory.interpolation_sweep(params, x, y, [rho], act="linear", out_act="linear", scheme=scheme)
    pi = np.asarray(theory.ratio_precisions(rho, 4, scheme=scheme))
    z = [np.asarray(v) for v in theory.linear_equilibrium(params, x, y, precisions=pi)]
    ff = [np.asarray(v) for v in pclib.forward(params, x, act="linear")]
    ts = [np.asarray(v) for v in theory.tp_targets(params, y, act="linear", out_act="linear")]
    Ws = [np.asarray(p["W"]) for p in params]
    bs = [np.asarray(p["b"]) for p in params]
    delta = [None] * 4
    delta[3] = np.asarray(y) - ff[4]
    for l in (3, 2, 1):
        delta[l - 1] = delta[l] @ Ws[l]
    deg = lambda u, v: np.degrees(np.arccos(np.clip(np.sum(u * v) / np.linalg.norm(u) / np.linalg.norm(v), -1, 1)))  # noqa: E731
    for l in (1, 2, 3):
        eps = z[l] - (z[l - 1] @ Ws[l - 1].T + bs[l - 1])
        assert r["angle_bp_layers"][0, l - 1] == pytest.approx(deg(pi[l - 1] * eps, delta[l - 1]), abs=1e-7)
        assert r["angle_tp_layers"][0, l - 1] == pytest.approx(deg(z[l] - ff[l], ts[l] - ff[l]), abs=1e-7)
        assert r["dist_tp_layers"][0, l - 1] == pytest.approx(np.linalg.norm(z[l] - ts[l]) / np.linalg.norm(ts[l]), rel=1e-10)
        assert r["dist_ff_layers"][0, l - 1] == pytest.approx(np.linalg.norm(z[l] - ff[l]) / np.linalg.norm(ff[l]), rel=1e-10)
    one = theory.interpolation_sweep(*paper_net(0, [5, 5, 5]), RATIOS[:3], act="linear", out_act="linear")
    for m in ("angle_bp", "angle_tp", "dist_ff", "dist_tp"):
        np.testing.assert_allclose(one[m + "_layers"][:, 0], one[m], rtol=1e-12)


@pytest.mark.parametrize("seed", range(8))
def test_deep_sweep_per_layer_claims(seed):
    """The chapter's per-layer checks: layerwise ratio 1e3 brings every layer within 0.1 degree of its TP move; the
    output ratio only the top one, the bottom one staying more than 5 degrees away; every layer's angle to backprop
    rises with rho under both schemes."""
    params, x, y = deep_net(seed)
    geo = theory.interpolation_sweep(params, x, y, DEEP_RATIOS, act="linear", out_act="linear")
    out = theory.interpolation_sweep(params, x, y, DEEP_RATIOS, act="linear", out_act="linear", scheme="output")
    assert geo["angle_tp_layers"][-1].max() < 0.1
    assert out["angle_tp_layers"][-1, -1] < 0.1 and out["angle_tp_layers"][-1, 0] > 5.0
    for r in (geo, out):
        assert np.all(np.diff(r["angle_bp_layers"], axis=0) > 0)


def test_gaussian_nets_one_sample_in_80_below_1e9():
    """The summary's count: of the 80 samples (10 Gaussian nets x 8), exactly one has lambda_min(H*) < 1e-9."""
    count = 0
    for seed in range(10):
        gauss = pclib.init_mlp(jax.random.key(seed), [2] * 5)
        y = pclib.predict(gauss, 1.0 * jax.random.normal(jax.random.key(seed + 1), (8, 2)), act="tanh", out_act="tanh")
        ts = theory.tp_targets(gauss, y, act="tanh", out_act="tanh")
        eig = np.linalg.eigvalsh(np.asarray(theory.sample_activity_hessians(gauss, ts, free=range(4), act="tanh",
                                                                            out_act="tanh")))
        count += int(np.sum(eig[:, 0] < 1e-9))
    assert count == 1


# --- generalised energies: weight updates and learning (App. A.8) -------------------------------------------------

def H_CAUCHY(e):
    """The chapter's penalty h(e) = log(1 + e^2) / 2, with h'(e) = e / (1 + e^2)."""
    return 0.5 * jnp.log1p(e**2)


def _adjoint_weight_grads(params, zs, e_out):
    """Backprop's weight gradient along zs from e_out, written out in numpy: -(1/N) (f'(a_l) * e_l)^T z_{l-1}."""
    adjoint = [np.asarray(v) for v in theory.backprop_errors(params, zs, e_out)]
    out = []
    for l, (p, e) in enumerate(zip(params, adjoint)):
        z = np.asarray(zs[l])
        a = z @ np.asarray(p["W"]).T + np.asarray(p["b"])
        fp = 1 - np.tanh(a) ** 2 if l < len(params) - 1 else np.ones_like(a)
        out.append({"W": -(fp * e).T @ z / z.shape[0], "b": -(fp * e).sum(0) / z.shape[0]})
    return out


@pytest.mark.parametrize("seed", range(3))
def test_generalised_weight_update_is_backprops_formula_at_equilibrium_only(seed, net):
    params, x, y = net(seed, [5, 8, 8, 3], n=8)
    pi = jnp.array([1.0, 2.0, 0.5])

    def gap(zs):
        g = jax.grad(lambda p: theory.generalised_energy(p, zs, h=H_CAUCHY, precisions=pi))(params)
        e = pclib.errors(params, zs)[-1]
        return float(theory.relative_error(_adjoint_weight_grads(params, zs, pi[-1] * e / (1 + e**2)), g))

    assert gap(theory.generalised_infer(params, x, y, h=H_CAUCHY, precisions=pi)) < 1e-8
    early = theory.generalised_infer(params, x, y, h=H_CAUCHY, precisions=pi, steps=10, dt=0.1, method="euler", tol=None)
    assert gap(early) > 0.05


@pytest.mark.parametrize("seed", range(3))
def test_generalised_update_over_pi_L_tends_to_the_backprop_gradient_of_l_h(seed, net):
    """(1/pi_L) dF_h/dtheta -> grad l_h, l_h = (1/N) sum h(y - y_hat), with a gap of order pi_L."""
    params, x, y = net(seed, [5, 8, 8, 3], n=8)
    bp = jax.grad(lambda p: jnp.sum(H_CAUCHY(y - pclib.predict(p, x))) / x.shape[0])(params)
    gaps = []
    for p_out in (1e-2, 1e-3, 1e-4):
        pi = jnp.array([1.0, 1.0, p_out])
        zs = theory.generalised_infer(params, x, y, h=H_CAUCHY, precisions=pi)
        g = jax.grad(lambda q: theory.generalised_energy(q, zs, h=H_CAUCHY, precisions=pi))(params)
        gaps.append(float(theory.relative_error(jax.tree_util.tree_map(lambda v: v / p_out, g), bp)))
    assert gaps[-1] < 1e-3
    assert gaps[0] / gaps[1] > 5 and gaps[1] / gaps[2] > 5


def test_generalised_train_matches_plain_loops():
    """BP: three updates equal a Python loop of jax.grad steps on l_h; PC with h = e^2/2: one update equals
    params - lr * pclib.pc_grads at theory.equilibrium (squared-error PC); normalise divides by the global norm."""
    params, x, y = pclib.random_problem(0, [3, 6, 2], n=10)
    ell = lambda p: jnp.sum(H_CAUCHY(y - pclib.predict(p, x))) / x.shape[0]  # noqa: E731
    p = params
    losses = []
    for _ in range(3):
        losses.append(float(ell(p)))
        p = jax.tree_util.tree_map(lambda a, g: a - 0.1 * g, p, jax.grad(ell)(p))
    losses.append(float(ell(p)))
    bp = theory.generalised_train(params, x, y, h=H_CAUCHY, lr=0.1, iterations=3, method="bp")
    np.testing.assert_allclose(bp["loss"], losses, rtol=1e-12)
    assert theory.relative_error(bp["params"], p) < 1e-12
    np.testing.assert_allclose(bp["cosine"], 1.0, rtol=1e-12)
    quad = lambda e: 0.5 * e**2  # noqa: E731
    pi = jnp.array([1.0, 0.3])
    pc = theory.generalised_train(params, x, y, h=quad, lr=0.1, iterations=1, precisions=pi)
    g = pclib.pc_grads(params, theory.equilibrium(params, x, y, precisions=pi), precisions=pi)
    expected = jax.tree_util.tree_map(lambda a, b: a - 0.1 * b, params, g)
    assert theory.relative_error(pc["params"], expected) < 1e-8
    assert pc["residual"][0] < pc["tol"]
    normed = theory.generalised_train(params, x, y, h=quad, lr=0.1, iterations=1, precisions=pi, normalise=True)
    norm = float(jnp.sqrt(sum(jnp.sum(v**2) for v in jax.tree_util.tree_leaves(g))))
    expected = jax.tree_util.tree_map(lambda a, b: a - 0.1 * b / norm, params, g)
    assert theory.relative_error(normed["params"], expected) < 1e-8


def test_generalised_learning_run_of_the_chapter():
    """The chapter's run (teacher 5-8-8-3, 32 samples, every eighth target shifted by 4, three seeds, matched steps):
    every inference certified; PC at pi_L = 1e-3 follows backprop on l_h (1 - cosine < 1e-3); every run lowers l_h
    below 0.8 of its start; at pi_L = 1 the cosine falls below 0.9 on every seed."""
    teacher, x, _ = pclib.random_problem(100, [5, 8, 8, 3], n=32)
    outlier = (jnp.arange(32) % 8 == 0)[:, None]
    y = pclib.predict(teacher, x) + 0.05 * jax.random.normal(jax.random.key(7), (32, 3)) + 4.0 * outlier
    for seed in range(3):
        params = pclib.random_problem(seed, [5, 8, 8, 3], n=32)[0]
        runs = {name: theory.generalised_train(params, x, y, h=H_CAUCHY, lr=0.05, iterations=200, normalise=True,
                                               tol=1e-9, max_steps=200, **opts)
                for name, opts in (("bp", dict(method="bp")), ("low", dict(precisions=jnp.array([1.0, 1.0, 1e-3]))),
                                   ("one", dict(precisions=jnp.array([1.0, 1.0, 1.0]))))}
        assert runs["low"]["residual"].max() < 1e-9 and runs["one"]["residual"].max() < 1e-9
        assert 1 - runs["low"]["cosine"].min() < 1e-3
        assert runs["one"]["cosine"].min() < 0.9
        for r in runs.values():
            assert r["loss"][-1] < 0.8 * r["loss"][0]
        assert runs["low"]["norm_ratio"][0] == pytest.approx(1e3, rel=0.05)


def test_generalised_infer_compiles_once_per_h():
    from conftest import count_compilations

    h = lambda e: 0.5 * jnp.log1p(e**2)  # noqa: E731
    params, x, y = pclib.random_problem(0, [4, 5, 2], n=6)
    theory.generalised_infer(params, x, y, h=h, precisions=jnp.array([1.0, 2.0]))
    with count_compilations() as c:
        for seed in (1, 2):
            p2, x2, y2 = pclib.random_problem(seed, [4, 5, 2], n=6)
            theory.generalised_infer(p2, x2, y2, h=h, precisions=jnp.array([1.0, 0.5]))
    assert c["n"] == 0
