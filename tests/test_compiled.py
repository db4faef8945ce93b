"""The compiled building blocks: compiled once per shape and option set, never again for new data or
new precisions, equal to their op-by-op definitions, and usable under an outer jit, vmap and grad."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pclib
from pclib import theory
from conftest import count_compilations, random_net




def _problem(i, widths=(5, 7, 6, 3), act="tanh"):
    params, x, y = random_net(100 + i, list(widths), act=act, n=8)
    pi = jnp.linspace(0.5, 2.0, len(params)) + 0.1 * i
    zs = pclib.infer(params, x, y, act=act, steps=3, dt=0.1).activities
    return params, x, y, pi, zs


CALLS = {
    "energy": lambda p, x, y, pi, zs: pclib.energy(p, zs, precisions=pi),
    "errors": lambda p, x, y, pi, zs: pclib.errors(p, zs),
    "mse_loss": lambda p, x, y, pi, zs: pclib.mse_loss(p, x, y),
    "pc_grads": lambda p, x, y, pi, zs: pclib.pc_grads(p, zs, precisions=pi),
    "bp_grads": lambda p, x, y, pi, zs: pclib.bp_grads(p, x, y),
    "linear_equilibrium": lambda p, x, y, pi, zs: theory.linear_equilibrium(p, x, y, precisions=pi),
    "linear_equilibrated_energy": lambda p, x, y, pi, zs: theory.linear_equilibrated_energy(p, x, y, precisions=pi),
    "equilibrated_energy": lambda p, x, y, pi, zs: theory.equilibrated_energy(p, x, y, precisions=pi),
    "equilibrium_covariance": lambda p, x, y, pi, zs: theory.equilibrium_covariance(p, precisions=pi),
    "linear_activity_hessian": lambda p, x, y, pi, zs: theory.linear_activity_hessian(p, precisions=pi),
    "equilibrium_residual": lambda p, x, y, pi, zs: theory.equilibrium_residual(p, zs, precisions=pi),
    "layer_flow": lambda p, x, y, pi, zs: theory.layer_flow(p, zs, 1, jnp.linspace(0.0, 1.0, 5), precisions=pi),
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_no_recompilation_for_new_data_params_or_precisions(name):
    """After the first call, new parameters, data and precisions of the same shapes compile nothing."""
    problems = [_problem(i) for i in range(4)]
    jax.block_until_ready(CALLS[name](*problems[0]))
    with count_compilations() as c:
        for prob in problems[1:]:
            jax.block_until_ready(CALLS[name](*prob))
    assert c["n"] == 0


def test_one_compilation_per_option_set():
    """A new activation or a new shape compiles once more; going back to a seen one does not."""
    params, x, y, pi, zs = _problem(0)
    x4, y4 = jax.block_until_ready((x[:4], y[:4]))
    pclib.bp_grads(params, x, y, act="relu")
    with count_compilations() as c:
        pclib.bp_grads(params, x, y, act="relu")
        pclib.bp_grads(params, x4, y4, act="relu")  # new batch size
        pclib.bp_grads(params, x4, y4, act="relu")
    assert c["n"] == 1


@pytest.mark.parametrize("act", ["tanh", "relu", "linear", jax.nn.sigmoid])
def test_compiled_equals_op_by_op(act):
    """Every compiled block returns what its definition computes op by op (jax.disable_jit)."""
    params, x, y, pi, zs = _problem(1, act="tanh")
    lin = dict(act="linear", out_act="linear")
    fns = {
        "energy": lambda: pclib.energy(params, zs, act=act, precisions=pi),
        "errors": lambda: pclib.errors(params, zs, act=act),
        "mse_loss": lambda: pclib.mse_loss(params, x, y, act=act),
        "pc_grads": lambda: pclib.pc_grads(params, zs, act=act, precisions=pi),
        "bp_grads": lambda: pclib.bp_grads(params, x, y, act=act),
        "equilibrium": lambda: theory.linear_equilibrium(params, x, y, precisions=pi),
        "f_star": lambda: theory.equilibrated_energy(params, x, y, precisions=pi),
        "f_star_lin": lambda: theory.linear_equilibrated_energy(params, x, y, precisions=pi),
        "S": lambda: theory.equilibrium_covariance(params, precisions=pi),
        "H": lambda: theory.linear_activity_hessian(params, precisions=pi),
        "residual": lambda: theory.equilibrium_residual(params, zs, act=act, precisions=pi),
        "flow": lambda: theory.layer_flow(params, zs, 2, jnp.array([0.0, 0.3]), precisions=pi),
        "energy_lin": lambda: pclib.energy(params, zs, precisions=pi, **lin),
    }
    for name, fn in fns.items():
        fast = fn()
        with jax.disable_jit():
            slow = fn()
        for a, b in zip(jax.tree_util.tree_leaves(fast), jax.tree_util.tree_leaves(slow)):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14, err_msg=name)


def test_pc_and_bp_grads_are_gradients_of_energy_and_loss():
    params, x, y, pi, zs = _problem(2)
    g = pclib.pc_grads(params, zs, precisions=pi)
    ref = jax.grad(lambda p: jnp.sum(pclib.layer_energies(p, zs, precisions=pi)))(params)
    gb = pclib.bp_grads(params, x, y)
    refb = jax.grad(lambda p: 0.5 * jnp.sum((y - pclib.predict(p, x)) ** 2) / x.shape[0])(params)
    for a, b in zip(jax.tree_util.tree_leaves((g, gb)), jax.tree_util.tree_leaves((ref, refb))):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_blocks_work_under_outer_jit_vmap_and_grad():
    params, x, y, pi, zs = _problem(3)
    # outer jit: the same numbers
    np.testing.assert_allclose(jax.jit(lambda p: pclib.mse_loss(p, x, y))(params), pclib.mse_loss(params, x, y))
    # outer grad: the Hessian-vector product of the energy through pc_grads, against finite differences
    v = jax.tree_util.tree_map(jnp.ones_like, params)
    dot = lambda g: sum(jnp.sum(a * b) for a, b in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(v)))
    hvp = jax.grad(lambda p: dot(pclib.pc_grads(p, zs, precisions=pi)))(params)
    h = 1e-6
    shift = lambda s: jax.tree_util.tree_map(lambda a, b: a + s * h * b, params, v)
    fd = (dot(pclib.pc_grads(shift(1), zs, precisions=pi)) - dot(pclib.pc_grads(shift(-1), zs, precisions=pi))) / (2 * h)
    np.testing.assert_allclose(dot(hvp), fd, rtol=1e-6)
    # outer grad through the closed forms (envelope theorem: grad F* = PC gradient at z*)
    g_env = jax.grad(lambda p: theory.linear_equilibrated_energy(p, x, y, precisions=pi))(params)
    g_pc = pclib.pc_grads(params, theory.linear_equilibrium(params, x, y, precisions=pi), act="linear", precisions=pi)
    for a, b in zip(jax.tree_util.tree_leaves(g_env), jax.tree_util.tree_leaves(g_pc)):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-12)
    # outer vmap over samples: per-sample losses average to the batch loss
    per = jax.vmap(lambda a, b: pclib.mse_loss(params, a[None], b[None]))(x, y)
    np.testing.assert_allclose(per.mean(), pclib.mse_loss(params, x, y), rtol=1e-12)
    per_e = jax.vmap(lambda *z: pclib.energy(params, [u[None] for u in z], precisions=pi))(*zs)
    np.testing.assert_allclose(per_e.mean(), pclib.energy(params, zs, precisions=pi), rtol=1e-12)


def test_unhashable_callable_activation_runs_op_by_op():
    """A callable that cannot be a static argument still works (it is run without jit)."""

    class Tanh:
        __hash__ = None

        def __call__(self, a):
            return jnp.tanh(a)

    params, x, y, pi, zs = _problem(4)
    np.testing.assert_allclose(pclib.mse_loss(params, x, y, act=Tanh()), pclib.mse_loss(params, x, y), rtol=1e-12)
    for a, b in zip(jax.tree_util.tree_leaves(pclib.pc_grads(params, zs, act=Tanh())),
                    jax.tree_util.tree_leaves(pclib.pc_grads(params, zs))):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_checks_still_run_before_the_compiled_code():
    params, x, y, pi, zs = _problem(5)
    with pytest.raises(ValueError, match=r"one scalar per layer, shape \(3,\)"):
        pclib.pc_grads(params, zs, precisions=[1.0, 2.0])
    with pytest.raises(ValueError, match="activities must list one array per layer"):
        pclib.energy(params, zs[:-1])
    with pytest.raises(ValueError, match="unknown activation"):
        pclib.bp_grads(params, x, y, act="gelu")
    with pytest.raises(ValueError, match="same number of samples"):
        theory.equilibrated_energy(params, x, y[:3])


def test_call_overhead_item_quick():
    """The benchmark item runs, times each pclib call against its plain-JAX reference, and the two
    compute the same numbers."""
    from pclib import bench

    with jax.enable_x64(False):
        sec = bench.call_overhead_item(bench.Options(quick=True, configs=("A", "C"), budget=0.1))
    calls = [(r["config"], r["call"]) for r in sec.rows]
    assert ("A", "infer + pc_grads (T = 20)") in calls and ("C", "infer + pc_grads (T = 5)") in calls
    assert ("A", "bp_grads") in calls and ("C", "pc_grads (at given activities)") in calls
    for r in sec.rows:
        assert r["rel_diff"] <= 1e-5, r
        assert r["ratio"] > 0 and r["pclib_ms"]["min"] <= r["pclib_ms"]["median"]


def test_random_draws_equal_jax_random_bit_for_bit():
    """pclib draws normals and splits keys from one compiled program per size bucket; the values are exactly
    those of jax.random.normal / jax.random.split for the requested shape (typed and raw keys, both dtypes),
    and a new shape within a bucket compiles nothing."""
    from pclib.model import normal, split_keys

    for key in (jax.random.key(3), jax.random.PRNGKey(4)):
        for n in (1, 7):
            ours = [np.asarray(jax.random.key_data(k) if jnp.issubdtype(k.dtype, jax.dtypes.prng_key) else k)
                    for k in split_keys(key, n)]
            ref = jax.random.split(key, n)
            ref = np.asarray(jax.random.key_data(ref) if jnp.issubdtype(ref.dtype, jax.dtypes.prng_key) else ref)
            np.testing.assert_array_equal(np.stack(ours), ref)
    for key, shape, dtype in ((jax.random.key(3), (16, 6), jnp.float64), (jax.random.key(3), (3, 257), jnp.float64),
                              (jax.random.PRNGKey(4), (2, 3, 4), jnp.float64), (jax.random.key(5), (1,), jnp.float32)):
        a, b = normal(key, shape, dtype), jax.random.normal(key, shape, dtype)
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    normal(jax.random.key(0), (9, 9), jnp.float64)
    with count_compilations() as c:
        normal(jax.random.key(1), (7, 11), jnp.float64)  # 77 values: the same bucket as 81
        split_keys(jax.random.key(2), 5)
        split_keys(jax.random.key(3), 6)
    assert c["n"] == 0
    # random_problem is built from these draws: the same numbers as written with jax.random directly
    params, x, y = pclib.random_problem(5, [4, 6, 3], act="relu", n=7)
    k1, k2, k3, k4 = jax.random.split(jax.random.key(5), 4)
    for l, (k, kb, (d_in, d_out)) in enumerate(zip(jax.random.split(k1, 2), jax.random.split(k4, 2), ((4, 6), (6, 3)))):
        std = (np.sqrt(2.0) if l == 0 else 1.0) / np.sqrt(d_in)
        np.testing.assert_array_equal(params[l]["W"], std * jax.random.normal(k, (d_out, d_in)))
        np.testing.assert_array_equal(params[l]["b"], 0.1 * jax.random.normal(kb, (d_out,)))
    np.testing.assert_array_equal(x, jax.random.normal(k2, (7, 4)))
    np.testing.assert_array_equal(y, jax.random.normal(k3, (7, 3)))


def test_random_start_is_drawn_outside_the_compiled_solve():
    """infer(init="normal") starts from standard-normal activities drawn with the key (split per layer), the same
    as passing that start explicitly, and a new key compiles nothing."""
    params, x, y = random_net(6, [5, 7, 6, 3], n=8)
    keys = jax.random.split(jax.random.key(9), len(params))
    start = [x] + [jax.random.normal(k, (8, p["W"].shape[0])) for k, p in zip(keys, params)]
    res = pclib.infer(params, x, None, steps=4, dt=0.1, init="normal", key=jax.random.key(9))
    ref = pclib.infer(params, x, None, steps=4, dt=0.1, init=start)
    for a, b in zip(res.activities, ref.activities):
        np.testing.assert_array_equal(a, b)
    pclib.infer(params, x, y, steps=4, dt=0.1)
    with count_compilations() as c:
        pclib.infer(params, x, None, steps=4, dt=0.1, init="normal", key=jax.random.key(10))
        pclib.infer(params, x, y, steps=4, dt=0.1, key=jax.random.key(11))  # a key the ffwd start does not use
    assert c["n"] == 0
