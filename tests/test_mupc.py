"""The μPC parameterisation (Innocenti, Achour & Buckley 2025) in pclib: ``param="mupc"``.

Expected values are independent of pclib's code: the forward pass and the energy written out by hand in NumPy,
the linear μPC net as a standard linear net with effective weights M_1 = a_1 W_1, M_l = I + a_l W_l,
M_L = a_L W_L built by hand (closed-form equilibrium from pclib.theory.linear, gradients by the chain rule), and
the small-output-precision limit where PC's weight gradient over pi_L tends to backprop's.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import pclib
from pclib import theory
from pclib.compare import compare
from pclib.equilibria import equilibrium
from pclib.inference import _energies_of_free
from pclib.mupc import euler_dt

ACTS = {"linear": lambda a: a, "tanh": np.tanh, "relu": lambda a: np.maximum(a, 0.0)}


def _net(seed, widths, *, n=7, bias=0.3):
    """A μPC net in float64 with random biases (std ``bias``, to test where they enter), inputs, targets and
    random activities."""
    k = jax.random.split(jax.random.key(seed), 5)
    params = pclib.init_mupc(k[0], widths, dtype=jnp.float64)
    bks = jax.random.split(k[1], len(params))
    params = [dict(p, b=bias * jax.random.normal(kb, p["b"].shape, jnp.float64)) for p, kb in zip(params, bks)]
    x = jax.random.normal(k[2], (n, widths[0]), jnp.float64)
    y = jax.random.normal(k[3], (n, widths[-1]), jnp.float64)
    zs = [x] + [jax.random.normal(kk, (n, w), jnp.float64) for kk, w in zip(jax.random.split(k[4], len(widths) - 1),
                                                                          widths[1:])]
    return params, x, y, zs


def _np_scales(widths):
    D, N, L = widths[0], widths[1], len(widths) - 1
    return [1 / np.sqrt(D)] + [1 / np.sqrt(N * L)] * (L - 2) + [1 / N]


def _np_predictions(params, zs, act):
    """mu_1 = a_1 (W_1 x + b_1); mu_l = z_{l-1} + a_l (W_l phi(z_{l-1}) + b_l); mu_L = a_L (W_L phi(z_{L-1}) + b_L)."""
    W = [np.asarray(p["W"]) for p in params]
    b = [np.asarray(p["b"]) for p in params]
    widths = [W[0].shape[1]] + [w.shape[0] for w in W]
    a = _np_scales(widths)
    phi = ACTS[act]
    L = len(W)
    z = [np.asarray(v) for v in zs]
    mus = [a[0] * (z[0] @ W[0].T + b[0])]
    for l in range(1, L - 1):
        mus.append(z[l] + a[l] * (phi(z[l]) @ W[l].T + b[l]))
    mus.append(a[-1] * (phi(z[L - 1]) @ W[-1].T + b[-1]))
    return mus


def _close(got, expect):
    assert len(got) == len(expect)
    for g, e in zip(got, expect):
        np.testing.assert_allclose(np.asarray(g), e, rtol=1e-12, atol=1e-13)


def test_scales_and_init():
    """a_1 = 1/sqrt(D), a_l = 1/sqrt(N L), a_L = 1/N; weights N(0, 1) in init_mlp's shapes, zero biases."""
    widths = [400, 300, 300, 300, 10]
    np.testing.assert_allclose(pclib.mupc_scales(widths), [1 / 20, *[1 / np.sqrt(1200)] * 2, 1 / 300], rtol=1e-15)
    params = pclib.init_mupc(jax.random.key(0), widths)
    ref = pclib.init_mlp(jax.random.key(0), widths)
    assert [p["W"].shape for p in params] == [p["W"].shape for p in ref]
    assert params[0]["W"].dtype == jnp.float32
    for p in params[:-1]:
        W = np.asarray(p["W"], np.float64)
        assert abs(W.mean()) < 0.01 and abs(W.std() - 1.0) < 0.01
        assert not np.any(np.asarray(p["b"]))
    assert abs(np.asarray(params[-1]["W"]).std() - 1.0) < 0.03


@pytest.mark.parametrize("bad", [[5, 8, 6, 3], [5, 8, 8, 7, 3], [5, 3]])
def test_widths_that_cannot_be_residual_are_refused(bad):
    with pytest.raises(ValueError, match="muPC"):
        pclib.init_mupc(jax.random.key(0), bad)
    with pytest.raises(ValueError, match="muPC"):
        pclib.mupc_scales(bad)
    params = pclib.init_mlp(jax.random.key(0), bad)
    with pytest.raises(ValueError, match="muPC"):
        pclib.forward(params, jnp.ones((2, bad[0])), param="mupc")


def test_unknown_param_names_the_choices():
    params, x, y, zs = _net(0, [4, 5, 5, 3])
    calls = [
        lambda p: pclib.forward(params, x, param=p), lambda p: pclib.predict(params, x, param=p),
        lambda p: pclib.energy(params, zs, param=p), lambda p: pclib.errors(params, zs, param=p),
        lambda p: pclib.layer_energies(params, zs, param=p), lambda p: pclib.predictions(params, zs, param=p),
        lambda p: pclib.infer(params, x, y, param=p), lambda p: pclib.infer(params, x, y, tol=1e-6, method="newton",
                                                                             param=p),
        lambda p: pclib.pc_grads(params, zs, param=p), lambda p: pclib.bp_grads(params, x, y, param=p),
        lambda p: pclib.mse_loss(params, x, y, param=p),
        lambda p: pclib.make_step(optax.sgd(0.1), param=p),
        lambda p: pclib.train(params, x, y, param=p, batch_size=7, progress=False),
        lambda p: compare([params] * 3, x, y, lrs=[0.1], param=p),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="'standard', 'mupc'"):
            call("mup")


@pytest.mark.parametrize("seed", range(6))
def test_forward_and_energy_match_the_formulas_by_hand(seed):
    act = ["tanh", "relu", "linear"][seed % 3]
    widths = [6] + [5] * (1 + seed % 4) + [3]
    params, x, y, zs = _net(seed, widths)
    mus = _np_predictions(params, zs, act)
    _close(pclib.predictions(params, zs, act=act, param="mupc"), mus)
    F = np.mean(sum(0.5 * np.sum((np.asarray(z) - m) ** 2, axis=1) for z, m in zip(zs[1:], mus)))
    np.testing.assert_allclose(float(pclib.energy(params, zs, act=act, param="mupc")), F, rtol=1e-12)
    per_layer = [np.mean(0.5 * np.sum((np.asarray(z) - m) ** 2, axis=1)) for z, m in zip(zs[1:], mus)]
    np.testing.assert_allclose(pclib.layer_energies(params, zs, act=act, param="mupc"), per_layer, rtol=1e-12)
    # the forward pass: each layer its own prediction from the one below
    ff = [np.asarray(x)]
    for l in range(len(params)):
        pad = ff + [np.zeros((x.shape[0], w)) for w in widths[len(ff):]]
        ff.append(_np_predictions(params, pad, act)[l])
    _close(pclib.forward(params, x, act=act, param="mupc"), ff)
    np.testing.assert_allclose(float(pclib.mse_loss(params, x, y, act=act, param="mupc")),
                               np.mean(0.5 * np.sum((np.asarray(y) - ff[-1]) ** 2, axis=1)), rtol=1e-12)


def _effective(params):
    """M_1 = a_1 W_1, M_l = I + a_l W_l, M_L = a_L W_L, biases a_l b_l, by hand."""
    W = [np.asarray(p["W"]) for p in params]
    a = _np_scales([W[0].shape[1]] + [w.shape[0] for w in W])
    out = []
    for l, (p, a_l) in enumerate(zip(params, a)):
        M = a_l * W[l] + (np.eye(W[l].shape[0]) if 0 < l < len(W) - 1 else 0.0)
        out.append({"W": jnp.asarray(M), "b": jnp.asarray(a_l * np.asarray(p["b"]))})
    return out, a


@pytest.mark.parametrize("seed", range(5))
def test_linear_mupc_is_the_standard_net_of_effective_weights(seed):
    widths = [5] + [6] * (2 + seed % 3) + [3]
    params, x, y, zs = _net(seed, widths)
    eff, a = _effective(params)
    opts = dict(act="linear", out_act="linear")
    np.testing.assert_allclose(float(pclib.energy(params, zs, param="mupc", **opts)),
                               float(pclib.energy(eff, zs, **opts)), rtol=1e-12)
    # weight gradients by the chain rule: dF/dW_l = a_l dF/dM_l, dF/db_l = a_l dF/dc_l
    g_mu = pclib.pc_grads(params, zs, param="mupc", **opts)
    g_std = pclib.pc_grads(eff, zs, **opts)
    for gm, gs, a_l in zip(g_mu, g_std, a):
        np.testing.assert_allclose(gm["W"], a_l * gs["W"], rtol=1e-11, atol=1e-14)
        np.testing.assert_allclose(gm["b"], a_l * gs["b"], rtol=1e-11, atol=1e-14)
    g_bp = pclib.bp_grads(params, x, y, param="mupc", **opts)
    for gm, gs, a_l in zip(g_bp, pclib.bp_grads(eff, x, y, **opts), a):
        np.testing.assert_allclose(gm["W"], a_l * gs["W"], rtol=1e-11, atol=1e-14)
    # the equilibrium: the closed form of the effective standard net, reached by both solvers on the μPC energy
    star = theory.linear_equilibrium(eff, x, y)
    dt = euler_dt(params, np.ones(len(params)))
    for method in ("newton", "euler"):
        res = pclib.infer(params, x, y, param="mupc", tol=1e-11, method=method, dt=dt, max_steps=200_000, **opts)
        assert float(res.residual) < 1e-11
        assert float(theory.relative_error(res.activities[1:-1], star[1:-1])) < 1e-9
    assert float(theory.relative_error(equilibrium(params, x, y, param="mupc", **opts)[1:-1], star[1:-1])) < 1e-12


@pytest.mark.parametrize("seed", range(4))
def test_bp_grads_are_the_gradient_of_the_loss_written_by_hand(seed):
    act = ["tanh", "relu"][seed % 2]
    params, x, y, _ = _net(seed, [6, 5, 5, 5, 3])
    a = _np_scales([6, 5, 5, 5, 3])
    phi = {"tanh": jnp.tanh, "relu": jax.nn.relu}[act]

    def loss(p):
        z = a[0] * (x @ p[0]["W"].T + p[0]["b"])
        for l in (1, 2):
            z = z + a[l] * (phi(z) @ p[l]["W"].T + p[l]["b"])
        out = a[3] * (phi(z) @ p[3]["W"].T + p[3]["b"])
        return 0.5 * jnp.mean(jnp.sum((y - out) ** 2, axis=1))

    ref = jax.grad(loss)(params)
    got = pclib.bp_grads(params, x, y, act=act, param="mupc")
    assert float(theory.relative_error(got, ref)) < 1e-12


@pytest.mark.parametrize("seed", range(4))
def test_free_output_settles_at_the_mupc_forward_pass(seed):
    """Millidge et al. Thm 3.1 for μPC: output free -> the equilibrium is the feedforward pass, from a random start."""
    act = ["tanh", "linear"][seed % 2]
    params, x, _, _ = _net(seed, [5] + [6] * (2 + seed % 3) + [3])
    res = pclib.infer(params, x, None, act=act, param="mupc", tol=1e-10, method="newton", init="normal",
                      key=jax.random.key(seed))
    assert float(theory.relative_error(res.activities, pclib.forward(params, x, act=act, param="mupc"))) < 1e-8


@pytest.mark.parametrize("seed", range(4))
def test_small_output_precision_limit_pc_grads_over_pi_L_is_bp(seed):
    """The PC = BP limit the standard tests use (pi_L -> 0, test_ch03_tp): at the certified equilibrium,
    pc_grads / pi_L -> bp_grads for μPC too."""
    act = ["tanh", "relu"][seed % 2]
    params, x, y, _ = _net(seed, [5] + [6] * 4 + [3])
    rho = 1e-6
    pi = jnp.asarray([1.0] * (len(params) - 1) + [rho])
    zs = pclib.infer(params, x, y, act=act, param="mupc", precisions=pi, tol=1e-13, method="newton").activities
    g_pc = jax.tree_util.tree_map(lambda g: g / rho, pclib.pc_grads(params, zs, act=act, param="mupc", precisions=pi))
    g_bp = pclib.bp_grads(params, x, y, act=act, param="mupc")
    assert float(theory.relative_error(g_pc, g_bp)) < 1e-4


@pytest.mark.parametrize("act", ["tanh", "relu", "linear"])
def test_newton_preconditioner_is_the_gauss_newton_diagonal(act):
    """The diagonal pclib.mupc passes to CG equals diag(Pi_l) + diag(J^T Pi J), J by autodiff, scalar and matrix."""
    params, x, y, zs = _net(3, [4, 5, 5, 5, 2], n=3)
    zs = [x] + zs[1:-1] + [y]
    free = (1, 2, 3)
    rng = np.random.default_rng(0)
    mats = []
    for w in (5, 5, 5, 2):
        A = rng.normal(size=(w, w))
        mats.append(jnp.asarray(A @ A.T / w + np.eye(w)))
    for pi in (jnp.asarray([1.0, 2.0, 0.5, 3.0]), tuple(mats)):
        _, _, diag = _energies_of_free(params, zs, pi, act=act, out_act="linear",
                                       free=free, param="mupc")
        got = diag([zs[l] for l in free])
        preds = pclib.model.mupc_predictors(params, act=act)
        P = [p * jnp.eye(w) for p, w in zip(pi, (5, 5, 5, 2))] if not isinstance(pi, tuple) else list(pi)
        for j, l in enumerate(free):
            expect = []
            for i in range(x.shape[0]):
                J = jax.jacfwd(lambda z: preds[l](params[l], z[None])[0])(zs[l][i])
                expect.append(jnp.diagonal(P[l - 1]) + jnp.diagonal(J.T @ P[l] @ J))
            np.testing.assert_allclose(got[j], jnp.stack(expect), rtol=1e-10, atol=1e-12)


def test_euler_at_the_mupc_step_descends_and_newton_agrees():
    """Euler from the feedforward pass at pclib.mupc.euler_dt lowers the energy at every step and ends where
    Newton–CG does, on a 16-layer tanh μPC net."""
    params, x, y, _ = _net(2, [8] + [16] * 15 + [4], n=5)
    dt = euler_dt(params, np.ones(len(params)))
    run = pclib.infer(params, x, y, param="mupc", steps=400, dt=dt, check=True)
    assert np.all(np.diff(np.asarray(run.energies)) <= 1e-15)
    newton = pclib.infer(params, x, y, param="mupc", tol=1e-10, method="newton")
    euler = pclib.infer(params, x, y, param="mupc", tol=1e-10, dt=dt, max_steps=100_000)
    assert float(theory.relative_error(euler.activities[1:-1], newton.activities[1:-1])) < 1e-8


def test_standard_param_is_the_default_bit_for_bit():
    params, x, y = pclib.random_problem(0, [4, 6, 6, 3])
    zs = pclib.infer(params, x, y, steps=7).activities
    same = [
        (pclib.forward(params, x), pclib.forward(params, x, param="standard")),
        (pclib.energy(params, zs), pclib.energy(params, zs, param="standard")),
        (pclib.infer(params, x, y, steps=7).activities, pclib.infer(params, x, y, steps=7, param="standard").activities),
        (pclib.pc_grads(params, zs), pclib.pc_grads(params, zs, param="standard")),
        (pclib.bp_grads(params, x, y), pclib.bp_grads(params, x, y, param="standard")),
    ]
    for u, v in same:
        for a, b in zip(jax.tree_util.tree_leaves(u), jax.tree_util.tree_leaves(v)):
            assert np.array_equal(np.asarray(a), np.asarray(b))


def test_training_and_compare_run_on_mupc_nets():
    """train/make_step/compare thread param: 30 Adam steps on a 6-layer μPC net fit a smooth target (loss down
    tenfold), for PC and BP."""
    params, x, _, _ = _net(1, [6] + [8] * 5 + [3], n=32, bias=0.0)
    y = jnp.tanh(2.0 * x[:, :3])
    for method in ("pc", "bp"):
        _, hist = pclib.train(params, x, y, method=method, optimizer=optax.adam(0.1), epochs=30, batch_size=32,
                              act="tanh", param="mupc", steps=8, dt=0.3, progress=False)
        assert hist["loss"][-1] < 0.1 * hist["loss"][0]
    c = compare([params] * 3, x, y, lrs=[0.01, 0.05], optimizer=optax.adam, epochs=3, batch_size=16, steps=8, dt=0.3,
                param="mupc")
    assert np.all(np.isfinite(c.losses)) and np.all(c.equilibrium_residual <= c.equilibrium_tol)
