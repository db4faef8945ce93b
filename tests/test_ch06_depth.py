"""Chapter 6 (depth): the error wave of inference, the conditioning of the activity Hessian, μPC and the width limit.

Expected values come from closed forms (binomial leading order, path Laplacian, expected covariances), dense
eigendecompositions, explicit matrix powers and iterative inference (``pclib.infer``), never from stored outputs.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pclib
from pclib import theory
from pclib.explore import depth as ex


def np_nets(seed, widths):
    """A standard linear net (W ~ N(0, 1/fan-in)) and the muPC effective weights from the same N(0, 1) draws."""
    rng = np.random.default_rng(seed)
    Ws = [rng.standard_normal((b, a)) for a, b in zip(widths[:-1], widths[1:])]
    return ([{"W": jnp.asarray(W / np.sqrt(W.shape[1]))} for W in Ws],
            theory.mupc_effective_weights([{"W": jnp.asarray(W)} for W in Ws]))


def error_trace(params, x, y, *, act, steps, dt):
    res = pclib.infer(params, x, y, act=act, steps=steps, dt=dt, record=True, check=False)
    traj = [np.asarray(z) for z in res.trajectory]
    return [[np.asarray(e) for e in pclib.errors(params, [z[k] for z in traj], act=act)] for k in range(steps + 1)]


# --- the error wave ---------------------------------------------------------------------------------


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), depth=st.integers(2, 6), dt=st.sampled_from([0.1, 0.4, 1.0]))
def test_errors_move_by_I_minus_dt_G(seed, depth, dt):
    widths = [3] + [4] * (depth - 1) + [2]
    params, x, y = pclib.random_problem(seed, widths, act="linear", n=5)
    G = np.asarray(theory.error_operator(params))
    ff = pclib.forward(params, x, act="linear")
    e0 = np.concatenate([np.zeros((5, G.shape[0] - 2)), np.asarray(y - ff[-1])], axis=1)
    eps = error_trace(params, x, y, act="linear", steps=depth + 1, dt=dt)
    for k, e in enumerate(eps):
        expected = e0 @ np.linalg.matrix_power(np.eye(len(G)) - dt * G, k)
        assert np.allclose(np.concatenate(e, axis=1), expected, atol=1e-10 * np.abs(e0).max())


@pytest.mark.parametrize("act", ["linear", "tanh", "relu"])
def test_no_error_beyond_the_front_and_dt_power_at_it(act):
    widths = [5] + [7] * 7 + [3]
    L = len(widths) - 1
    for seed in range(3):
        params, x, y = pclib.random_problem(seed, widths, act=act)
        ff = pclib.forward(params, x, act=act)
        delta = theory.backprop_errors(params, ff, y - ff[-1], act=act)
        for dt in (0.2, 0.7):
            eps = error_trace(params, x, y, act=act, steps=5, dt=dt)
            for k in range(6):
                assert all(np.all(eps[k][l] == 0) for l in range(L - 1 - k))
                assert float(theory.relative_error(eps[k][L - 1 - k], dt**k * delta[L - 1 - k])) < 1e-8


def test_leading_order_is_exact_at_the_front_and_first_order_behind_it():
    widths = [4] + [6] * 7 + [3]
    L, K = len(widths) - 1, 5
    params, x, y = pclib.random_problem(3, widths, act="linear")
    dL = y - pclib.forward(params, x, act="linear")[-1]
    gaps = []
    for dt in (0.02, 0.01):
        eps = error_trace(params, x, y, act="linear", steps=K, dt=dt)
        lead = theory.leading_order_errors(params, dL, steps=K, dt=dt)
        for k in range(K + 1):
            for l in range(L):
                j = L - 1 - l
                if j > k:
                    assert np.all(np.asarray(lead[l][k]) == 0)
                if j == k:
                    assert float(theory.relative_error(eps[k][l], lead[l][k])) < 1e-6  # rounding: dt^k is tiny
        gaps.append(max(float(theory.relative_error(eps[K][l], lead[l][K])) for l in range(L - 1 - K, L)))
    assert 1.8 < gaps[0] / gaps[1] < 2.2


def test_correction_behind_the_front_is_dt_times_k_minus_j_not_over_j_plus_1():
    """Orthogonal square M_l (l >= 2): to first order in dt the relative correction to C(k, j) dt^j delta_{L-j} is
    exactly -dt (k - j)(2j + 1)/(j + 1) (every G_ll = 2I below the output, G_LL = I); it grows with k - j and does not
    shrink like 1/(j + 1). The errors come from matrix powers of I - dt G, the expected value from the closed form."""
    rng = np.random.default_rng(4)
    N, L, K, dt = 4, 10, 6, 1e-4
    chain = [{"W": jnp.asarray(rng.standard_normal((N, 3)))}] + \
        [{"W": jnp.asarray(np.linalg.qr(rng.standard_normal((N, N)))[0])} for _ in range(L - 1)]
    G = np.asarray(theory.error_operator(chain))
    dL = rng.standard_normal((1, N))
    e0 = np.concatenate([np.zeros((1, G.shape[0] - N)), dL], axis=1)
    eK = (e0 @ np.linalg.matrix_power(np.eye(len(G)) - dt * G, K)).reshape(L, N)  # all layers have width N
    lead = theory.leading_order_errors(chain, jnp.asarray(dL), steps=K, dt=dt)
    for j in range(K):
        ld = np.asarray(lead[L - 1 - j][K])
        rel = (eK[L - 1 - j] - ld[0]) @ ld[0] / (ld[0] @ ld[0])  # signed, along delta_{L-j}
        expected = -dt * (K - j) * (2 * j + 1) / (j + 1)
        assert abs(rel / expected - 1) < 1e-2, (j, rel, expected)


def test_fixed_time_profile_is_the_limit_of_the_binomial():
    t, T = 3.0, 200_000
    prof = theory.fixed_time_profile(t, 12)
    binom = np.array([math.comb(T, j) * (t / T) ** j for j in range(12)])
    assert np.allclose(prof, binom, rtol=1e-3)
    assert np.allclose(prof, [t**j / math.factorial(j) for j in range(12)], rtol=1e-12)


def test_G_and_H_share_their_nonzero_eigenvalues():
    for seed, widths in enumerate(([4, 6, 5, 3], [3, 5, 5, 5, 2], [2, 7, 4])):
        params, _, _ = pclib.random_problem(seed, widths, act="linear")
        g = np.linalg.eigvalsh(np.asarray(theory.error_operator(params)))
        h = np.linalg.eigvalsh(np.asarray(theory.linear_activity_hessian(params)))
        assert np.abs(g[: widths[-1]]).max() < 1e-12 and np.allclose(g[widths[-1]:], h, atol=1e-12)


# --- conditioning -----------------------------------------------------------------------------------


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), widths=st.lists(st.integers(1, 6), min_size=3, max_size=7))
def test_activity_spectrum_is_the_dense_spectrum(seed, widths):
    params, _, _ = pclib.random_problem(seed, widths, act="linear")
    dense = np.linalg.eigvalsh(np.asarray(theory.linear_activity_hessian(params)))
    assert np.allclose(theory.activity_spectrum(params), dense, atol=1e-11)


def test_orthogonal_chains_have_the_path_laplacian_spectrum_and_attain_the_bound():
    rng = np.random.default_rng(0)
    for n, N in ((1, 3), (2, 4), (6, 3), (12, 2)):
        Q = [np.linalg.qr(rng.standard_normal((N, N)))[0] for _ in range(n - 1)]
        chain = [{"W": jnp.asarray(rng.standard_normal((N, 2)))}] + [{"W": jnp.asarray(q)} for q in Q] + \
            [{"W": jnp.zeros((3, N))}]
        lam = theory.activity_spectrum(chain)
        k = np.arange(1, n + 1)
        assert np.allclose(lam, np.repeat(2 - 2 * np.cos((2 * k - 1) * np.pi / (2 * n + 1)), N), atol=1e-12)
        assert np.allclose(theory.path_eigenvalues(n), np.sort(np.linalg.eigvalsh(
            np.diag([2.0] * (n - 1) + [1.0]) - np.eye(n, k=1) - np.eye(n, k=-1))), atol=1e-12)
        assert abs(theory.chain_lambda_min_bound(chain, rng.standard_normal(N)) - lam[0]) < 1e-12


def test_eigenvalue_bounds_hold_on_random_nets():
    rng = np.random.default_rng(1)
    for seed in range(4):
        for depth in (3, 6, 10):
            for p in np_nets(seed, [5] + [8] * (depth - 1) + [3]):
                lam = theory.activity_spectrum(p)
                top = max(np.linalg.norm(np.asarray(l["W"]), 2) for l in p[1:])
                assert lam[-1] <= (1 + top) ** 2 * (1 + 1e-12)
                for _ in range(3):
                    assert lam[0] <= theory.chain_lambda_min_bound(p, rng.standard_normal(8)) * (1 + 1e-12)


def test_euler_residuals_are_the_iterates_and_the_step_count_is_first_below_tol():
    params, x, y = pclib.random_problem(2, [4, 6, 6, 6, 3], act="linear", bias=False)
    H = np.asarray(theory.linear_activity_hessian(params))
    lam = np.linalg.eigvalsh(H)
    dt = 2 / (lam[0] + lam[-1])
    ff = pclib.forward(params, x, act="linear")
    g0 = np.concatenate([np.zeros((x.shape[0], 12)), -np.asarray(y - ff[-1]) @ np.asarray(params[-1]["W"])], axis=1)
    g, ref = g0.copy(), []
    for _ in range(60):
        ref.append(np.linalg.norm(g) / np.linalg.norm(g0))
        g = g - dt * g @ H
    assert np.allclose(theory.euler_residuals(H, g0, range(60), dt=dt), ref, rtol=1e-9)
    k = theory.euler_steps_to(H, g0, tol=1e-6, dt=dt)
    r = theory.euler_residuals(H, g0, [k - 1, k], dt=dt)
    assert r[0] >= 1e-6 > r[1]
    kappa = lam[-1] / lam[0]
    assert k <= math.ceil(np.log(1e6) / np.log((kappa + 1) / (kappa - 1)))
    # pclib.infer after k steps: the same relative residual
    res = pclib.infer(params, x, y, act="linear", steps=k, dt=dt)
    z_star = theory.linear_equilibrium(params, x, y)
    dist = np.concatenate([np.asarray(a - b) for a, b in zip(res.activities[1:-1], z_star[1:-1])], axis=1)
    assert abs(np.linalg.norm(dist @ H) / np.linalg.norm(g0) - r[1]) < 1e-8


def test_condition_number_grows_with_depth_and_with_width_only_under_the_standard_parameterisation():
    """The chapter's measured statements over three draws: kappa(L = 16) / kappa(L = 4) > 8 for both; at L = 16 and 32
    from width 16 to 64 the standard kappa grows by a larger factor than muPC's; at width 64 and L >= 8 it is the larger."""
    for seed in range(3):
        kap = {}
        for depth in (4, 8, 16, 32):
            for N in (16, 64):
                for name, p in zip(("std", "mupc"), np_nets(seed, [10] + [N] * (depth - 1) + [5])):
                    lam = theory.activity_spectrum(p)
                    kap[(name, depth, N)] = lam[-1] / lam[0]
        for name in ("std", "mupc"):
            assert kap[(name, 16, 16)] / kap[(name, 4, 16)] > 8
        for depth in (16, 32):
            assert kap[("std", depth, 64)] / kap[("std", depth, 16)] > kap[("mupc", depth, 64)] / kap[("mupc", depth, 16)]
        assert all(kap[("std", d, 64)] > kap[("mupc", d, 64)] for d in (8, 16, 32))


# --- parameterisations and the width limit ------------------------------------------------------------


def _scales(widths, name):
    L, N = len(widths) - 1, widths[1]
    if name == "std":
        return theory.standard_scales(widths), False
    if name == "mupc":
        return pclib.mupc_scales(widths), True
    return (1 / np.sqrt(widths[0]),) + (1 / np.sqrt(N),) * (L - 2) + (1 / N,), True


@pytest.mark.parametrize("name", ["std", "mupc", "residual"])
def test_expected_square_norms_and_output_covariance_by_sampling(name):
    widths = [6, 12, 12, 12, 12, 4]
    a, residual = _scales(widths, name)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(6)
    sq, S = [], []
    for _ in range(1500):
        M = [a_l * rng.standard_normal((o, i)) + (np.eye(o) if residual and 0 < l < 4 else 0)
             for l, (a_l, i, o) in enumerate(zip(a, widths[:-1], widths[1:]))]
        z, row = x, []
        for Ml in M:
            z = Ml @ z
            row.append(z @ z / (x @ x))
        sq.append(row)
        S.append(np.trace(np.asarray(theory.equilibrium_covariance([{"W": jnp.asarray(m)} for m in M]))) / 4)
    assert np.allclose(np.mean(sq, axis=0), theory.expected_square_norms(widths, a, residual=residual), rtol=0.1)
    assert abs(np.mean(S) / theory.expected_output_covariance(widths, a, residual=residual) - 1) < 0.05


def test_expected_output_covariance_closed_forms():
    for L in (2, 5, 17):
        for N in (8, 100):
            w = [7] + [N] * (L - 1) + [3]
            assert abs(theory.expected_output_covariance(w, theory.standard_scales(w), residual=False) - L) < 1e-9
            a, _ = _scales(w, "mupc")
            c = theory.expected_output_covariance(w, a, residual=True)
            assert abs(c - (1 + L / N * ((1 + 1 / L) ** (L - 1) - 1))) < 1e-12
            assert 1 + (L - 1) / N - 1e-12 <= c <= 1 + (np.e - 1) * L / N


def test_energy_loss_ratio_is_the_closed_form_over_the_loss():
    for seed, widths in enumerate(([4, 6, 6, 3], [3, 5, 2], [5, 4, 4, 4, 4, 2])):
        params, x, y = pclib.random_problem(seed, widths, act="linear", bias=False)
        ref = float(theory.equilibrated_energy(params, x, y) / pclib.mse_loss(params, x, y, act="linear"))
        assert abs(theory.energy_loss_ratio(params, x, y) - ref) < 1e-12


def test_width_limit_over_seeds():
    """muPC: F*/L within 5% of 1/c for N >= 8L (and above 0.9 at N = 16L); standard: near 1/L, within 50%."""
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((64, 10)), rng.standard_normal((64, 5))
    for seed in range(3):
        for L, N in ((4, 64), (8, 128)):
            w = [10] + [N] * (L - 1) + [5]
            std, mupc = np_nets(seed, w)
            c = theory.expected_output_covariance(w, _scales(w, "mupc")[0], residual=True)
            r = theory.energy_loss_ratio(mupc, x, y)
            assert abs(r * c - 1) < 0.05 and r > 0.9
            assert abs(theory.energy_loss_ratio(std, x, y) * L - 1) < 0.5


def test_mupc_effective_weights_are_the_linear_mupc_network():
    params = [{"W": jnp.asarray(np.random.default_rng(0).standard_normal(s))} for s in ((6, 4), (6, 6), (6, 6), (3, 6))]
    M = theory.mupc_effective_weights(params)
    a = (1 / 2, 1 / np.sqrt(24), 1 / np.sqrt(24), 1 / 6)
    x = np.random.default_rng(1).standard_normal((5, 4))
    z = x @ (a[0] * np.asarray(params[0]["W"])).T
    for l in (1, 2):
        z = z + a[l] * z @ np.asarray(params[l]["W"]).T
    z = a[3] * z @ np.asarray(params[3]["W"]).T
    assert np.allclose(pclib.forward(M, jnp.asarray(x), act="linear")[-1], z, atol=1e-12)


def test_mupc_effective_weights_match_pclib_mupc_forward_and_energy():
    for seed in range(3):
        p = pclib.init_mupc(jax.random.key(seed), [5, 8, 8, 8, 3], dtype=jnp.float64)
        x = jax.random.normal(jax.random.key(seed + 10), (6, 5), jnp.float64)
        y = jax.random.normal(jax.random.key(seed + 20), (6, 3), jnp.float64)
        M = theory.mupc_effective_weights(p)
        zm = pclib.forward(p, x, act="linear", param="mupc")
        assert float(theory.relative_error(zm, pclib.forward(M, x, act="linear"))) < 1e-12
        z_star = theory.linear_equilibrium(M, x, y)
        assert abs(float(pclib.energy(p, z_star, act="linear", param="mupc")) -
                   float(theory.equilibrated_energy(M, x, y))) < 1e-10


# --- the explorable figures' data ----------------------------------------------------------------------


def test_explorable_data_is_pclib():
    measured, leading = ex.wavefront_data(0.3)
    T = ex.WAVE_STEPS
    assert np.all(measured[T, T + 1:] == 0) and np.all(measured[:, 0] > 0)
    k = np.arange(1, ex.WAVE_DEPTH)  # the front: after k steps, distance k carries dt^k of backprop's error
    assert np.allclose(measured[k, k], 0.3**k, rtol=1e-6)
    assert np.allclose(leading[T, :5], [math.comb(T, j) * 0.3**j for j in range(5)], rtol=1e-10)
    s, m = ex.spectrum_data(4, 8)
    std, mupc = ex.nets(0, 8, 4)
    assert np.allclose(s, np.linalg.eigvalsh(np.asarray(theory.linear_activity_hessian(std))), atol=1e-12)
    assert np.allclose(m, np.linalg.eigvalsh(np.asarray(theory.linear_activity_hessian(mupc))), atol=1e-12)
    lim = ex.width_limit_data(4)
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((64, ex.D_IN)), rng.standard_normal((64, ex.D_OUT))
    std, mupc = ex.nets(0, ex.LIMIT_WIDTHS[2], 4)
    assert abs(lim["mupc"][2] - float(theory.equilibrated_energy(mupc, jnp.asarray(x), jnp.asarray(y))
                                      / pclib.mse_loss(mupc, jnp.asarray(x), jnp.asarray(y), act="linear"))) < 1e-10
    assert np.allclose(lim["std_pred"], 0.25)


def test_numpy_activity_hessian_is_pclibs():
    for seed, widths in enumerate(([4, 6, 5, 3], [3, 5, 5, 5, 2], [2, 7, 4], [3, 4, 2])):
        params, _, _ = pclib.random_problem(seed, widths, act="linear")
        assert np.allclose(theory.activity_hessian_np(params), np.asarray(theory.linear_activity_hessian(params)),
                           atol=1e-14)
