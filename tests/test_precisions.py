"""Non-unit precisions and clamping, checked against quantities computed without the code under test.

Unit precisions hide a whole class of defects (``pi`` where ``sqrt(pi)`` belongs, a precision applied to
the wrong layer, a square dropped), because every power of 1 is 1. Here every closed form is run with
random precisions and compared with ``jax.hessian`` / ``jax.grad`` of the energy with the same precisions,
or with plain Euler inference. The clamping tests write the set of free layers out by hand.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pclib
from pclib import theory
from conftest import random_net
from pclib.energy import precision_matrices, sample_layer_energies


def random_precisions(seed, n_layers):
    """Precisions spread over two decades, none equal to one."""
    u = jax.random.uniform(jax.random.key(1000 + seed), (n_layers,), minval=-1.0, maxval=1.0)
    return 10.0 ** u + 0.05


def sample_energy(params, x_i, y_i, hidden, widths, *, act, pi):
    """One sample's energy F_i as a function of its flattened hidden activities (pclib.energy with N = 1)."""
    parts = jnp.split(hidden, np.cumsum(widths)[:-1])
    return pclib.energy(params, [x_i[None]] + [p[None] for p in parts] + [y_i[None]], act=act, precisions=pi)


# --- the Fisher information and the trust-region quantities ------------------------------------------


@pytest.mark.parametrize("seed,act", [(s, a) for s in range(4) for a in ("linear", "tanh")])
def test_fisher_with_precisions_is_the_energy_hessian_at_feedforward_values(seed, act):
    widths = [3, 5, 4, 2]
    params, x, y = random_net(seed, widths, act=act, n=3)
    pi = random_precisions(seed, 3)
    I = theory.fisher_information(params, x, act=act, precisions=pi)
    g = theory.activity_gradient(params, x, y, act=act, precisions=pi)
    ff = pclib.forward(params, x, act=act)
    for i in range(3):
        z = jnp.concatenate([ff[1][i], ff[2][i]])
        f = lambda h: sample_energy(params, x[i], y[i], h, widths[1:-1], act=act, pi=pi)
        np.testing.assert_allclose(I[i], jax.hessian(f)(z), atol=1e-10)
        np.testing.assert_allclose(g[i], jax.grad(f)(z), atol=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_natural_gradient_step_with_precisions_is_the_linear_equilibrium_move(seed):
    """For linear nets the quadratic model is exact: its minimiser is z* - z_hat, with z* found by Euler
    inference with the same precisions (not by the closed form that shares code with the Fisher)."""
    params, x, y = random_net(seed, [4, 6, 5, 3], act="linear", n=8)
    pi = random_precisions(seed, 3)
    z_star = _euler_equilibrium(params, x, y, pi)
    ff = pclib.forward(params, x, act="linear")
    dz = theory.natural_gradient_step(params, x, y, act="linear", precisions=pi)
    assert float(theory.relative_error(dz, [s - f for s, f in zip(z_star[1:-1], ff[1:-1])])) < 1e-8
    f_star = pclib.energy(params, z_star, act="linear", precisions=pi)
    assert abs(float(theory.trust_region_energy(params, x, y, act="linear", precisions=pi)) - float(f_star)) < 1e-9
    d = theory.trust_region_decomposition(params, x, y, act="linear", precisions=pi)
    pc = pclib.pc_grads(params, z_star, act="linear", precisions=pi)
    assert float(theory.relative_error(d["approx"], pc)) < 1e-7
    bp = jax.tree_util.tree_map(lambda g: pi[-1] * g, pclib.bp_grads(params, x, y, act="linear"))
    assert float(theory.relative_error(d["bp"], bp)) < 1e-12


# --- linear closed forms --------------------------------------------------------------------------------


def _euler_equilibrium(params, x, y, pi):
    """Plain Euler inference run to a 1e-12 contraction, its step from the largest curvature of jax.hessian."""
    widths = [p["W"].shape[0] for p in params[:-1]]
    H = jax.hessian(lambda h: sample_energy(params, x[0], y[0], h, widths, act="linear", pi=pi))(jnp.zeros(sum(widths)))
    lam = np.linalg.eigvalsh(np.asarray(H))
    dt = 1.0 / lam[-1]
    steps = int(np.ceil(np.log(1e-12) / np.log(1.0 - dt * lam[0])))
    return pclib.infer(params, x, y, act="linear", steps=steps, dt=dt, precisions=pi).activities


@pytest.mark.parametrize("seed", range(4))
def test_linear_activity_hessian_with_precisions_is_jax_hessian(seed):
    widths = [4, 6, 5, 7, 3]
    params, x, y = random_net(seed, widths, act="linear")
    pi = random_precisions(seed, 4)
    Hn = jax.hessian(lambda h: sample_energy(params, x[0], y[0], h, widths[1:-1], act="linear", pi=pi))(jnp.zeros(18))
    np.testing.assert_allclose(theory.linear_activity_hessian(params, precisions=pi), Hn, atol=1e-12)


@pytest.mark.parametrize("seed,hidden", [(s, h) for s in range(3) for h in ([5], [6, 4], [5, 4, 6])])
def test_equilibrated_energy_with_precisions_equals_energy_after_inference(seed, hidden):
    """Thm 1 of Innocenti et al. (2024) with precisions: the closed form 1/2 r^T S^-1 r against the
    energy at the end of Euler inference."""
    params, x, y = random_net(seed, [4] + hidden + [3], act="linear", n=8)
    pi = random_precisions(seed, len(hidden) + 1)
    z = _euler_equilibrium(params, x, y, pi)
    expected = float(pclib.energy(params, z, act="linear", precisions=pi))
    assert abs(float(theory.equilibrated_energy(params, x, y, precisions=pi)) - expected) < 1e-9 * max(1.0, expected)
    assert float(theory.relative_error(theory.linear_equilibrium(params, x, y, precisions=pi)[1:-1], z[1:-1])) < 1e-8


def test_a_precision_on_the_wrong_layer_would_be_caught():
    """The check above can fail: reversing the precisions changes F* by far more than its tolerance."""
    params, x, y = random_net(0, [4, 5, 6, 3], act="linear", n=8)
    pi = random_precisions(0, 3)
    a = float(theory.equilibrated_energy(params, x, y, precisions=pi))
    b = float(theory.equilibrated_energy(params, x, y, precisions=pi[::-1]))
    assert abs(a - b) > 1e-3 * abs(a)


# --- clamping --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("clamp_input,with_y,free", [
    (True, True, (1, 2)),
    (True, False, (1, 2, 3)),
    (False, True, (0, 1, 2)),
    (False, False, (0, 1, 2, 3)),
])
@pytest.mark.parametrize("init", ["zeros", "normal"])
def test_clamped_layers_stay_exactly_at_x_and_y(clamp_input, with_y, free, init):
    """In a 3-layer net, inference moves exactly the layers listed in ``free`` (written out here) and leaves
    the clamped ones bit-for-bit equal to x and y. (Not from the feedforward pass: with the output free it
    is already an equilibrium, where no layer moves.)"""
    params, x, y = random_net(3, [3, 5, 4, 2], act="tanh", n=6)
    y_shifted = y + 0.5  # far from the feedforward output, so a free output would move
    key = jax.random.key(7)
    target = y_shifted if with_y else None
    start = pclib.inference.initial_activities(params, x, target, act="tanh", init=init, key=key)
    res = pclib.infer(params, x, target, act="tanh", steps=30, dt=0.1, init=init, key=key, clamp_input=clamp_input)
    zs = res.activities
    for l in range(4):
        moved = float(jnp.max(jnp.abs(zs[l] - start[l])))
        if l in free:
            assert moved > 1e-4, f"layer {l} should be free but did not move"
        else:
            assert moved == 0.0, f"layer {l} should be clamped but moved by {moved}"
    if clamp_input:
        assert np.array_equal(np.asarray(zs[0]), np.asarray(x))
    if with_y:
        assert np.array_equal(np.asarray(zs[-1]), np.asarray(y_shifted))


# --- matrix precisions (Millidge et al. 2022, Sec. 3.2 and Thm 3.5: Pi_l symmetric positive definite) ----------


def spd(rng, d, *, cond=20.0):
    """A dense symmetric positive definite matrix with eigenvalues log-uniform in [1/sqrt(cond), sqrt(cond)]
    and random eigenvectors (so its off-diagonal entries are not small)."""
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    return (q * np.exp(rng.uniform(-0.5, 0.5, size=d) * np.log(cond))) @ q.T


def matrix_precisions(seed, widths, *, scalar_layers=()):
    """One dense SPD matrix per weight layer (a scalar for the layers in ``scalar_layers``), and the same
    precisions written out as full matrices, for the numpy references."""
    rng = np.random.default_rng(seed)
    P, full = [], []
    for l, d in enumerate(widths[1:], start=1):
        if l in scalar_layers:
            s = float(10 ** rng.uniform(-1, 1))
            P.append(s)
            full.append(s * np.eye(d))
        else:
            M = spd(rng, d)
            P.append(jnp.asarray(M))
            full.append(M)
    return P, full


def numpy_errors(params, zs, act):
    f = np.tanh if act == "tanh" else (lambda a: a)
    out = []
    for l, p in enumerate(params):
        g = f if l < len(params) - 1 else (lambda a: a)
        out.append(np.asarray(zs[l + 1]) - g(np.asarray(zs[l]) @ np.asarray(p["W"]).T + np.asarray(p["b"])))
    return out


@pytest.mark.parametrize("seed,act", [(0, "tanh"), (1, "linear"), (2, "tanh")])
def test_energy_with_matrix_precisions_is_the_quadratic_form(seed, act):
    """F = (1/N) sum_i sum_l 1/2 eps_l,i^T Pi_l eps_l,i, by numpy from the errors computed by hand."""
    widths = [3, 5, 4, 2]
    params, x, y = random_net(seed, widths, act=act, n=7)
    zs = pclib.infer(params, x, y, act=act, steps=4, dt=0.1).activities
    zs = [zs[0], zs[1] + 0.3, zs[2] - 0.2, zs[3]]  # non-zero hidden errors
    P, full = matrix_precisions(seed, widths, scalar_layers=(2,))
    eps = numpy_errors(params, zs, act)
    per_layer = np.stack([0.5 * np.einsum("ni,ij,nj->n", e, M, e) for e, M in zip(eps, full)], axis=1)
    np.testing.assert_allclose(sample_layer_energies(params, zs, act=act, precisions=P), per_layer, rtol=1e-12)
    np.testing.assert_allclose(pclib.energy(params, zs, act=act, precisions=P), per_layer.sum(1).mean(), rtol=1e-12)
    # Pi_l = pi_l I in matrix form is the scalar path
    pi = np.array([0.5, 2.0, 3.0])
    as_matrices = [jnp.asarray(p * np.eye(d)) for p, d in zip(pi, widths[1:])]
    np.testing.assert_allclose(pclib.energy(params, zs, act=act, precisions=as_matrices),
                               pclib.energy(params, zs, act=act, precisions=pi), rtol=1e-13)


@pytest.mark.parametrize("seed", range(3))
def test_linear_activity_hessian_with_matrix_precisions_is_jax_hessian(seed):
    widths = [4, 6, 5, 3, 3]
    params, x, y = random_net(seed, widths, act="linear")
    P, _ = matrix_precisions(seed, widths, scalar_layers=(3,))
    Hn = jax.hessian(lambda h: sample_energy(params, x[0], y[0], h, widths[1:-1], act="linear", pi=P))(jnp.zeros(14))
    H = theory.linear_activity_hessian(params, precisions=P)
    np.testing.assert_allclose(H, Hn, atol=1e-12)
    assert np.linalg.eigvalsh(np.asarray(H))[0] > 0


def _gn_diagonal(params, zs, P, act):
    """diag(Pi_l + J_{l+1}^T Pi_{l+1} J_{l+1}) per sample and hidden layer, with J by jax.jacfwd."""
    out = []
    for l in range(1, len(params)):
        f = (lambda a: jnp.tanh(a)) if (act == "tanh" and l < len(params) - 1) else (lambda a: a)
        rows = []
        for i in range(zs[0].shape[0]):
            J = jax.jacfwd(lambda z: f(z @ params[l]["W"].T + params[l]["b"]))(zs[l][i])
            rows.append(np.diag(np.asarray(P[l - 1])) + np.diag(np.asarray(J.T @ P[l] @ J)))
        out.append(np.stack(rows))
    return out


@pytest.mark.parametrize("act", ["linear", "tanh"])
def test_newton_preconditioner_with_matrix_precisions_is_the_gauss_newton_diagonal(act):
    """The Jacobi diagonal of Newton-CG is diag(Pi_l + J^T Pi_{l+1} J) (jacfwd), and positive, for dense Pi with
    negative off-diagonal entries; for a linear net it is the diagonal of jax.hessian of the energy."""
    widths = [3, 5, 4, 2]
    params, x, y = random_net(4, widths, act=act, n=5)
    P, _ = matrix_precisions(4, widths)
    assert min(float(np.min(np.asarray(M))) for M in P) < 0
    zs = pclib.forward(params, x, act=act)
    zs[-1] = y
    Ps = precision_matrices(P, widths)
    *_, diagonal = pclib.inference._energies_of_free(params, zs, Ps, act=act, out_act="linear", free=(1, 2))
    d = diagonal([zs[1], zs[2]])
    for got, want in zip(d, _gn_diagonal(params, zs, Ps, act)):
        np.testing.assert_allclose(got, want, rtol=1e-12)
        assert float(jnp.min(got)) > 0
    if act == "linear":
        Hn = jax.hessian(lambda h: sample_energy(params, x[0], y[0], h, widths[1:-1], act="linear", pi=P))(jnp.zeros(9))
        np.testing.assert_allclose(jnp.concatenate([d[0][0], d[1][0]]), jnp.diag(Hn), rtol=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_euler_and_newton_reach_the_linear_equilibrium_with_matrix_precisions(seed):
    """Both solvers, run to a tolerance, land on linear_equilibrium's Cholesky solve with dense Pi_l."""
    widths = [4, 6, 5, 3]
    params, x, y = random_net(seed, widths, act="linear", n=8)
    P, _ = matrix_precisions(seed, widths, scalar_layers=(2,) if seed == 1 else ())
    star = theory.linear_equilibrium(params, x, y, precisions=P)
    lam = np.linalg.eigvalsh(np.asarray(theory.linear_activity_hessian(params, precisions=P)))
    euler = pclib.infer(params, x, y, act="linear", precisions=P, dt=1.0 / lam[-1], tol=1e-12, max_steps=200_000)
    newton = pclib.infer(params, x, y, act="linear", precisions=P, method="newton", tol=1e-12)
    for res in (euler, newton):
        assert bool(res.converged)
        assert float(theory.relative_error(res.activities[1:-1], star[1:-1])) < 1e-9
    assert int(newton.steps) < 20 < int(euler.steps)
    # and the equilibrium is a critical point of the energy with these precisions (jax.grad, independent)
    assert theory.equilibrium_residual(params, star, act="linear", out_act="linear", precisions=P) < 1e-10


@pytest.mark.parametrize("seed", range(4))
def test_theorem_3_5_layerwise_form_with_non_diagonal_precisions(seed):
    """Millidge et al. (2022), Thm 3.5, with biases: at the equilibrium every hidden layer satisfies
    z_l = (I + Pi_l^-1 W^T Pi_{l+1} W)^-1 [W_l z_{l-1} + b_l + Pi_l^-1 W^T Pi_{l+1} (z_{l+1} - b_{l+1})],
    W = W_{l+1}, checked in numpy at the equilibrium that Euler inference reaches (not the closed form);
    and the same equilibrium with the scalar ratios of the diagonals alone differs from it."""
    rng = np.random.default_rng(seed)
    widths = [int(w) for w in rng.integers(2, 7, size=int(rng.integers(3, 6)))]
    params, x, y = random_net(seed, widths, act="linear", n=6)
    P, full = matrix_precisions(seed + 10, widths)
    z = _euler_equilibrium(params, x, y, P)
    Ws = [np.asarray(p["W"]) for p in params]
    bs = [np.asarray(p["b"]) for p in params]
    zn = [np.asarray(v) for v in z]
    for l in range(1, len(params)):
        G = np.linalg.solve(full[l - 1], Ws[l].T @ full[l])  # Pi_l^{-1} W_{l+1}^T Pi_{l+1}
        A = np.eye(widths[l]) + G @ Ws[l]
        rhs = zn[l - 1] @ Ws[l - 1].T + bs[l - 1] + (zn[l + 1] - bs[l]) @ G.T
        np.testing.assert_allclose(zn[l], np.linalg.solve(A, rhs.T).T, atol=1e-8)
    diag_only = [jnp.asarray(np.diag(np.diag(M))) for M in full]
    assert float(theory.relative_error(theory.linear_equilibrium(params, x, y, precisions=diag_only)[1:-1], z[1:-1])) > 1e-3


@pytest.mark.parametrize("seed", range(2))
def test_equilibrated_energy_and_layer_flow_with_matrix_precisions(seed):
    """F* = 1/2 r^T S^-1 r with S = sum_l M_l Pi_l^-1 M_l^T against the energy after Euler inference; layer_flow's
    velocity at t = 0 is minus jax.grad of the energy, and its end point zeroes that gradient."""
    widths = [4, 5, 6, 3]
    params, x, y = random_net(seed, widths, act="linear", n=6)
    P, _ = matrix_precisions(seed + 20, widths, scalar_layers=(1,))
    z = _euler_equilibrium(params, x, y, P)
    expected = float(pclib.energy(params, z, act="linear", precisions=P))
    assert abs(float(theory.equilibrated_energy(params, x, y, precisions=P)) - expected) < 1e-9 * max(1.0, expected)
    assert abs(float(theory.linear_equilibrated_energy(params, x, y, precisions=P)) - expected) < 1e-9 * max(1.0, expected)
    zs = pclib.forward(params, x, act="linear")
    zs[-1] = y
    n = x.shape[0]
    grad = lambda v: n * jax.grad(lambda u: pclib.energy(params, zs[:2] + [u] + zs[3:], act="linear", precisions=P))(v)
    h = 1e-6
    path = theory.layer_flow(params, zs, 2, jnp.array([0.0, h, 1e4]), precisions=P)
    np.testing.assert_allclose((path[1] - path[0]) / h, -grad(zs[2]), rtol=1e-4, atol=1e-6)
    assert float(jnp.max(jnp.abs(grad(path[2])))) < 1e-9


def test_matrix_precisions_are_validated():
    widths = [3, 4, 2]
    params, x, y = random_net(0, widths, act="linear", n=3)
    zs = pclib.forward(params, x, act="linear")
    good = jnp.asarray(spd(np.random.default_rng(0), 4))
    cases = [
        ([jnp.eye(3), 1.0], r"precisions\[0\] \(layer 1, width 4\) must be a scalar or a \(4, 4\) matrix"),
        ([good, jnp.ones((2, 3))], r"precisions\[1\] \(layer 2, width 2\).*got shape \(2, 3\)"),
        ([good.at[0, 1].add(0.5), 1.0], r"precisions\[0\] \(layer 1\) is not symmetric.*\(P \+ P\.T\) / 2"),
        ([good, jnp.array([[1.0, 2.0], [2.0, 1.0]])], r"precisions\[1\] \(layer 2\) is not positive definite.*eigenvalue is -1.*P \+ c I"),
        ([good], r"one entry per weight layer \(2 for a 2-layer network\)"),
    ]
    calls = [
        lambda P: pclib.energy(params, zs, act="linear", precisions=P),
        lambda P: pclib.infer(params, x, y, act="linear", precisions=P, steps=2),
        lambda P: theory.linear_equilibrium(params, x, y, precisions=P),
        lambda P: theory.linear_activity_hessian(params, precisions=P),
        lambda P: theory.equilibrium(params, x, y, precisions=P),
    ]
    for P, match in cases:
        for call in calls:
            with pytest.raises(ValueError, match=match):
                call(P)
    # functions that take scalar precisions only say so
    with pytest.raises(ValueError, match="scalar precisions only"):
        theory.generalised_infer(params, x, y, h=lambda e: 0.5 * e**2, precisions=[good, 1.0])
    # a symmetric matrix up to rounding passes, and is symmetrised
    C = np.asarray(spd(np.random.default_rng(1), 4))
    inv = np.linalg.inv(C)
    assert float(pclib.energy(params, zs, act="linear", precisions=[inv, 1.0])) >= 0


def test_random_precision_matrix_is_the_inverse_of_a_mostly_diagonal_covariance():
    """App. A.9.1's recipe: inv(Pi) has the requested diagonal, symmetric off-diagonal entries of variance ~off_var."""
    off = []
    for s in range(20):
        Pi = np.asarray(theory.random_precision_matrix(s, 6, diag=3.0, off_var=0.1))
        np.testing.assert_allclose(Pi, Pi.T, atol=0)
        assert np.linalg.eigvalsh(Pi)[0] > 0
        C = np.linalg.inv(Pi)
        np.testing.assert_allclose(np.diag(C), 3.0, rtol=1e-12)
        off.append(C[np.triu_indices(6, 1)])
    assert 0.07 < np.var(np.concatenate(off)) < 0.13  # 300 draws of N(0, 0.1)
    with pytest.raises(ValueError, match="raise diag"):
        theory.random_precision_matrix(0, 6, diag=0.1, off_var=1.0)
