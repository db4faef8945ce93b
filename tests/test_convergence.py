"""Inference to a tolerance: the stopping rule, the Newton-CG solver against converged Euler and the
closed form, warm starts, the result's fields, compile counts, and bad input.

Expected values are independent of the solvers: residuals come from jax.grad of
pclib.sample_energies at the returned activities, linear equilibria from theory.linear_equilibrium
(a direct solve), and the free-output equilibrium from the feedforward pass (Thm 3.1).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pclib
from pclib import theory
from pclib.equilibria import default_tol, equilibrium
from conftest import count_compilations, random_net


def independent_residual(params, zs, free, *, act="tanh", precisions=None):
    """max_i max_{l in free} |dF_i/dz_l|, by jax.grad of the summed per-sample energies."""
    def total(free_z):
        full = list(zs)
        for l, z in zip(free, free_z):
            full[l] = z
        return jnp.sum(pclib.sample_energies(params, full, act=act, precisions=precisions))

    g = jax.grad(total)([zs[l] for l in free])
    return max(float(jnp.max(jnp.abs(a))) for a in g)


def hidden(zs):
    return list(zs[1:-1])


NETS = [(seed, [6] + [9] * depth + [4]) for seed, depth in enumerate([1, 2, 3, 4])]


# ----------------------------------------------------------------------------- the stopping rule
@pytest.mark.parametrize("method", ["euler", "newton"])
@pytest.mark.parametrize("seed,widths", NETS)
def test_residual_is_below_tol_by_an_independent_gradient(method, seed, widths):
    params, x, y = random_net(seed, widths, n=8)
    tol = 1e-9
    res = pclib.infer(params, x, y, tol=tol, method=method, dt=0.2)
    free = tuple(range(1, len(params)))
    r = independent_residual(params, res.activities, free)
    assert bool(res.converged) and r < tol
    assert float(res.residual) == pytest.approx(r, rel=1e-6, abs=1e-14)
    # the fixed-step run with the same step count lands on the same point (Euler: no sample stops
    # earlier than the batch here is not guaranteed, so compare only Newton's step count loosely)
    assert int(res.steps) >= 1


def test_euler_stops_at_the_first_step_below_tol_for_a_single_sample():
    """One sample: the tol run takes exactly the first k with residual(k) < tol, and ends where k fixed steps end."""
    params, x, y = random_net(3, [5, 8, 8, 3], n=1)
    tol = 1e-6
    res = pclib.infer(params, x, y, tol=tol, dt=0.2)
    k = int(res.steps)
    free = (1, 2)
    fixed = pclib.infer(params, x, y, steps=k, dt=0.2)
    before = pclib.infer(params, x, y, steps=k - 1, dt=0.2)
    assert independent_residual(params, fixed.activities, free) < tol <= independent_residual(params, before.activities, free)
    for a, b in zip(res.activities, fixed.activities):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    # energies: the trace of the fixed run, then the final energy repeated up to max_steps
    np.testing.assert_allclose(res.energies[: k + 1], fixed.energies, rtol=1e-12)
    assert res.energies.shape == (pclib.inference.DEFAULT_MAX_STEPS["euler"] + 1,)
    assert np.all(np.asarray(res.energies[k:]) == float(fixed.energies[-1]))


def test_a_converged_sample_stops_moving():
    """Each sample's end point does not depend on the batch it is solved with."""
    params, x, y = random_net(4, [5, 8, 8, 3], n=6)
    batch = pclib.infer(params, x, y, tol=1e-7, dt=0.2)
    for i in range(6):
        one = pclib.infer(params, x[i:i + 1], y[i:i + 1], tol=1e-7, dt=0.2)
        for a, b in zip(batch.activities, one.activities):
            np.testing.assert_allclose(a[i:i + 1], b, rtol=1e-12, atol=1e-14)


def test_fixed_steps_report_residual_and_steps():
    params, x, y = random_net(0, [5, 8, 3], n=4)
    res = pclib.infer(params, x, y, steps=7, dt=0.1)
    assert res.energies.shape == (8,) and int(res.steps) == 7 and res.converged is None
    assert float(res.residual) == pytest.approx(independent_residual(params, res.activities, (1,)), rel=1e-10)
    assert int(res.inner_steps) == 0


# ----------------------------------------------------------------------------- Newton-CG = converged Euler
@pytest.mark.parametrize("seed,widths", NETS)
@pytest.mark.parametrize("output", ["clamped", "free"])
def test_newton_reaches_the_euler_equilibrium(seed, widths, output):
    """float64, random tanh nets with 1-4 hidden layers: the two solvers agree to 1e-8 relative."""
    params, x, y = random_net(seed, widths, n=8)
    y = y if output == "clamped" else None
    start = dict(init="normal", key=jax.random.key(seed)) if y is None else {}
    euler = pclib.infer(params, x, y, tol=1e-12, dt=0.2, max_steps=200_000, **start)
    newton = pclib.infer(params, x, y, tol=1e-12, method="newton", **start)
    assert bool(euler.converged) and bool(newton.converged)
    assert float(theory.relative_error(newton.activities, euler.activities)) < 1e-8
    assert int(newton.steps) < int(euler.steps) / 10
    if y is None:  # Thm 3.1: the free-output equilibrium is the feedforward pass
        assert float(theory.relative_error(newton.activities, pclib.forward(params, x))) < 1e-8


@pytest.mark.parametrize("method", ["euler", "newton"])
def test_linear_nets_reach_the_closed_form(method):
    params, x, y = random_net(5, [6, 7, 5, 4], act="linear", n=8)
    pi = jnp.array([1.0, 3.0, 0.5])
    res = pclib.infer(params, x, y, act="linear", precisions=pi, tol=1e-12, method=method, dt=0.1)
    star = theory.linear_equilibrium(params, x, y, precisions=pi)
    assert float(theory.relative_error(hidden(res.activities), hidden(star))) < 1e-9
    # equilibrium() of a linear net is the closed form itself
    assert equilibrium(params, x, y, act="linear", out_act="linear", precisions=pi) is not None


def test_newton_is_robust_far_from_the_equilibrium():
    """From a large random start on a deep tanh net (indefinite Hessian there) the energy never rises
    and Newton-CG still reaches the equilibrium that Euler reaches from the same start."""
    params, x, y = random_net(7, [6, 10, 10, 10, 4], n=8, scale=1.5)
    start = [x] + [5.0 * jax.random.normal(jax.random.key(l), (8, 10)) for l in range(3)] + [y]
    newton = pclib.infer(params, x, y, init=start, tol=1e-10, method="newton")
    e = np.asarray(newton.energies[: int(newton.steps) + 1])
    assert np.all(np.diff(e) <= 1e-12 * e[0])
    assert independent_residual(params, newton.activities, (1, 2, 3)) < 1e-10


def test_newton_on_an_input_unclamped_net():
    """clamp_input=False (Thm 3.3): Newton-CG converges to a point where the full gradient vanishes."""
    params, x, y = random_net(2, [5, 5, 5], n=4)
    res = pclib.infer(params, x, y, clamp_input=False, tol=1e-10, method="newton")
    assert bool(res.converged)
    assert independent_residual(params, res.activities, (0, 1)) < 1e-10


def test_equilibrium_and_generalised_infer_use_the_tolerance():
    params, x, y = random_net(1, [5, 8, 8, 3], n=8)
    pi = jnp.array([1.0, 2.0, 0.5])
    zs = equilibrium(params, x, y, precisions=pi)
    assert independent_residual(params, zs, (1, 2), precisions=pi) < default_tol(jnp.float64, pi)
    quadratic = lambda e: 0.5 * e**2
    zg = theory.generalised_infer(params, x, y, h=quadratic, precisions=pi)
    assert float(theory.relative_error(hidden(zg), hidden(zs))) < 1e-8
    # the Euler route agrees
    ze = equilibrium(params, x, y, precisions=pi, method="euler")
    assert float(theory.relative_error(hidden(ze), hidden(zs))) < 1e-8


def test_default_tolerance_depends_on_dtype_and_precisions():
    assert default_tol(jnp.float64) == 1e-10 and default_tol(jnp.float32) == 1e-5
    assert default_tol(jnp.float64, [1.0, 100.0]) == pytest.approx(1e-8)
    assert default_tol(jnp.float32, [0.1, 0.5]) == 1e-5


def test_float32_reaches_its_default_tolerance():
    params, x, y = pclib.random_problem(0, [8, 16, 16, 4], n=8)
    params = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), params)
    x, y = x.astype(jnp.float32), y.astype(jnp.float32)
    zs = equilibrium(params, x, y)
    assert zs[1].dtype == jnp.float32
    assert independent_residual(params, zs, (1, 2)) < 1e-5


# ----------------------------------------------------------------------------- warm starts
@pytest.mark.parametrize("method", ["euler", "newton"])
def test_warm_start_from_the_equilibrium_takes_no_steps(method):
    params, x, y = random_net(0, [5, 8, 8, 3], n=8)
    first = pclib.infer(params, x, y, tol=1e-9, method=method, dt=0.2)
    again = pclib.infer(params, x, y, tol=1e-9, method=method, dt=0.2, init=first)  # an Inference is accepted
    assert int(again.steps) == 0 and bool(again.converged)
    for a, b in zip(first.activities, again.activities):
        np.testing.assert_array_equal(a, b)


def test_warm_started_sweep_matches_cold_starts():
    params, x, y = theory.random_invertible_problem(2, 5, 2, act="tanh", out_act="linear", n=8)
    ratios = [1e-2, 1.0, 1e2, 1e4]
    warm = theory.interpolation_sweep(params, x, y, ratios, act="tanh", out_act="linear")
    for k, r in enumerate(ratios):
        cold = theory.interpolation_sweep(params, x, y, [r], act="tanh", out_act="linear")
        for key in ("dist_ff", "dist_tp"):
            assert warm[key][k] == pytest.approx(cold[key][0], rel=1e-7), (r, key)
        for key in ("angle_bp", "angle_tp"):  # arccos near 0 amplifies rounding: compare angles loosely
            assert warm[key][k] == pytest.approx(cold[key][0], abs=1e-5), (r, key)


# ----------------------------------------------------------------------------- compile counts
@pytest.mark.parametrize("method", ["euler", "newton"])
def test_tol_runs_never_recompile_for_new_data_or_tolerance(method):
    params, x, y = random_net(0, [5, 7, 3], n=8)
    first = pclib.infer(params, x, y, tol=1e-8, method=method, precisions=jnp.array([1.0, 0.5]))
    pclib.infer(params, x, y, tol=1e-8, method=method, init=first)
    data = []  # drawn before counting: the draws compile their own programs, which are not inference's
    for i in range(3):
        k1, k2 = jax.random.split(jax.random.key(10 + i))
        data.append((jax.random.normal(k1, x.shape), jax.random.normal(k2, y.shape)))
    with count_compilations() as c:
        for i, (x_i, y_i) in enumerate(data):
            res = pclib.infer(params, x_i, y_i, tol=10.0 ** (-8 - i), method=method, precisions=jnp.array([1.0, 1.0 + i]))
            pclib.infer(params, x, y, tol=1e-8, method=method, init=res)  # a warm start too
    assert c["n"] == 0


def test_infer_validation_costs_microseconds():
    """A repeated call runs no op-by-op JAX outside its one compiled program (no compile, and the
    Python side is fast: well under a millisecond per call on average, generously bounded)."""
    import time

    params, x, y = random_net(0, [5, 7, 7, 3], n=8)
    pclib.infer(params, x, y, steps=5, check=False)
    with count_compilations() as c:
        t0 = time.perf_counter()
        for _ in range(50):
            res = pclib.infer(params, x, y, steps=5, check=False)
        jax.block_until_ready(res.activities)
        per_call = (time.perf_counter() - t0) / 50
    assert c["n"] == 0
    assert per_call < 0.02


# ----------------------------------------------------------------------------- bad input
def test_unreachable_tolerance_raises_not_converged_with_advice():
    params, x, y = random_net(0, [5, 8, 8, 3], n=8)
    with pytest.raises(pclib.NotConvergedError, match=r"max_steps.*method='newton'.*larger dt") as err:
        equilibrium(params, x, y, method="euler", max_steps=10)
    assert err.value.residual > err.value.tol == default_tol(jnp.float64) and err.value.steps == 10
    with pytest.raises(pclib.NotConvergedError, match="max_steps"):
        equilibrium(params, x, y, steps=1)  # the chapters' keyword is the cap
    with pytest.raises(pclib.NotConvergedError):
        theory.generalised_infer(params, x, y, h=lambda e: 0.5 * e**2, max_steps=1)
    with pytest.raises(pclib.NotConvergedError):
        theory.interpolation_sweep(*theory.random_invertible_problem(0, 5, 3, out_act="linear"), [1.0],
                                   act="tanh", out_act="linear", max_steps=1)
    # infer raises with check=True and reports with check=False
    with pytest.raises(pclib.NotConvergedError):
        pclib.infer(params, x, y, tol=1e-12, max_steps=5)
    res = pclib.infer(params, x, y, tol=1e-12, max_steps=5, check=False)
    assert not bool(res.converged) and float(res.residual) > 1e-12 and int(res.steps) == 5


@pytest.mark.parametrize("kw, pattern", [
    ({"method": "lbfgs"}, r"unknown method 'lbfgs'.*'euler', 'newton'"),
    ({"tol": 0.0}, "tol must be positive"),
    ({"tol": -1e-3}, "tol must be positive"),
    ({"tol": 1e-6, "max_steps": 0}, "max_steps must be at least 1"),
    ({"max_steps": 10}, "pass tol"),
    ({"tol": 1e-6, "record": True}, "record=True needs a fixed number of steps"),
    ({"method": "newton", "record": True}, "no trajectory"),
])
def test_bad_tolerance_options(kw, pattern):
    params, x, y = random_net(0, [4, 6, 3])
    with pytest.raises(ValueError, match=pattern):
        pclib.infer(params, x, y, **kw)


@pytest.mark.parametrize("call", ["equilibrium", "generalised_infer"])
def test_bad_equilibrium_options(call):
    params, x, y = random_net(0, [4, 6, 3])
    fn = equilibrium if call == "equilibrium" else lambda *a, **k: theory.generalised_infer(*a, h=jnp.square, **k)
    with pytest.raises(ValueError, match="unknown method"):
        fn(params, x, y, method="rk4")
    with pytest.raises(ValueError, match="tol must be positive"):
        fn(params, x, y, tol=0.0)
    with pytest.raises(ValueError, match="max_steps must be an int >= 1"):
        fn(params, x, y, max_steps=0)


def test_wrong_warm_start_names_the_fix():
    params, x, y = random_net(0, [4, 6, 5, 3], n=8)
    good = pclib.forward(params, x)
    with pytest.raises(pclib.WarmStartError, match=r"needs 4.*previous pclib.infer"):
        pclib.infer(params, x, y, init=good[:3])
    bad = list(good)
    bad[2] = jnp.zeros((8, 7))
    with pytest.raises(pclib.WarmStartError, match=r"init\[2\] has shape \(8, 7\).*needs \(8, 5\)"):
        pclib.infer(params, x, y, init=bad)
    with pytest.raises(pclib.WarmStartError, match=r"batch of 4"):
        pclib.infer(params, x[:4], y[:4], init=good)  # a previous batch of another size
    with pytest.raises(ValueError):  # WarmStartError is a ValueError
        equilibrium(params, x, y, init=good[:2])


def test_residual_is_the_largest_hidden_activity_gradient():
    """theory.equilibrium_residual against a hand-written gradient of the energy: large at the feedforward pass
    (the output error pushes on the last hidden layer), below the tolerance at a certified equilibrium."""
    params, x, y = random_net(2, [4, 6, 5, 3], act="tanh", n=8)
    ff = pclib.forward(params, x)
    zs = ff[:-1] + [y]
    # At the feedforward pass only the output error acts: dF_i/dz_2 = -J_3^T (y - y_hat), z_1's gradient is 0.
    W3 = params[2]["W"]
    expected = float(jnp.max(jnp.abs((y - ff[-1]) @ W3)))
    assert abs(theory.equilibrium_residual(params, zs) - expected) < 1e-12
    star = equilibrium(params, x, y, tol=1e-11)
    assert theory.equilibrium_residual(params, star) < 1e-11
