"""Chapter 5, escape and depth: PC (at converged inference and with 50 Euler inference steps) against backprop at
matched step length across depth, and the padded one-program sweep of ``pclib.scale.saddles``.

Expected values come from closed forms (``pclib.theory``, the explaining-away valley), the unpadded networks, or
separately compiled runs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pclib
from pclib import theory
from pclib.scale import saddles


def _teacher_data(n=128, d_in=6, d_out=3, seed=0):
    rng = np.random.default_rng(seed)
    X = jnp.asarray(rng.standard_normal((n, d_in)))
    return X, X @ jnp.asarray(rng.standard_normal((d_in, d_out))) / np.sqrt(d_in)


def _rank_levels(x, y):
    """The smallest loss of a rank-k linear map, k = 0, 1, ... (reduced-rank regression)."""
    x, y = np.asarray(x), np.asarray(y)
    w, V = np.linalg.eigh(x.T @ x / len(x))
    sig = np.linalg.svd((y.T @ x / len(x)) @ V @ np.diag(w**-0.5) @ V.T, compute_uv=False)
    tr = np.trace(y.T @ y / len(y))
    return [0.5 * (tr - np.sum(sig[:k] ** 2)) for k in range(len(sig) + 1)]


@pytest.mark.parametrize("H", [1, 2, 4])
@pytest.mark.parametrize("seed", [0, 1])
def test_padded_nets_have_the_loss_energy_and_gradients_of_the_real_ones(H, seed):
    """Identity layers without noise, inserted after the first layer, leave L, F* (Theorem 1) and their gradients in
    the real layers unchanged; the expected values are pclib.mse_loss and theory.equilibrated_energy of the real net."""
    x, y = _teacher_data(n=32, seed=seed)
    p = pclib.init_mlp(jax.random.key(seed), [6] + [5] * H + [3], bias=False, scale=0.7)
    padded, mask = saddles.pad_linear(p, 5)
    assert len(padded) == 6 and mask.sum() == H + 1
    values = lambda q: saddles._padded_values(q, jnp.asarray(mask[:-1]), x, y)  # noqa: E731
    L, F = values(padded)
    assert np.isclose(L, pclib.mse_loss(p, x, y, act="linear"), rtol=1e-12)
    assert np.isclose(F, theory.equilibrated_energy(p, x, y), rtol=1e-12)
    for k, fn in enumerate((lambda q: pclib.mse_loss(q, x, y, act="linear"), lambda q: theory.equilibrated_energy(q, x, y))):
        g_pad = jax.grad(lambda q: values(q)[k])(padded)
        g_real = jax.grad(fn)(p)
        got = [g for g, m in zip(g_pad, mask) if m]
        for a, b in zip(got, g_real):
            assert np.allclose(a["W"], b["W"], rtol=1e-10, atol=1e-14)


def test_one_program_sweep_equals_separate_runs():
    """linear_depth_sweep (all depths and both methods in one padded program) gives the same curves and escape
    times as matched_escape compiled per depth and method on the real networks."""
    x, y = _teacher_data()
    sweep = saddles.linear_depth_sweep(x, y, width=5, depths=(1, 3), lrs=(0.02, 0.05), iters=60, seeds=(0, 1))
    for d, H in enumerate((1, 3)):
        for m in ("pc", "bp"):
            sep = saddles.matched_escape(x, y, widths=[6] + [5] * H + [3], lrs=(0.02, 0.05), iters=60, method=m,
                                         pc="exact", seeds=(0, 1))
            assert np.allclose(sweep[m]["L"][d], sep["L"], rtol=1e-9) and np.allclose(sweep[m]["F"][d], sep["F"], rtol=1e-9)
            assert np.array_equal(sweep[m]["t_L"][d], sep["t_L"]) and np.array_equal(sweep[m]["t_F"][d], sep["t_F"])
            for a, b in zip(sweep[m]["last"][d], sep["last"]):
                assert np.allclose(a["W"], b["W"], rtol=1e-8, atol=1e-12)


def test_escape_across_depth_at_matched_step_length():
    """Teacher data, width 8, one to five hidden layers, step length 0.02, three seeds, 2000 iterations: PC at converged
    inference leaves the origin (L < 90% of its start) within the budget at every depth, later at every added layer;
    backprop no later than PC from two hidden layers on; PC's F* falls by 10% within 50 iterations at every depth (the
    explaining-away valley); from three hidden layers on backprop ends within 1% of a saddle level of the staircase
    (the loss of the best rank-k map, k >= 1) and PC below it."""
    x, y = _teacher_data()
    depths, iters = (1, 2, 3, 4, 5), 2000
    sweep = saddles.linear_depth_sweep(x, y, width=8, depths=depths, lrs=(0.02,), iters=iters)
    t_pc, t_bp, t_F = sweep["pc"]["t_L"][:, 0], sweep["bp"]["t_L"][:, 0], sweep["pc"]["t_F"][:, 0]  # (depths, seeds)
    assert np.all(t_pc < iters) and np.all(t_F <= 50), (t_pc, t_F)
    assert all(t_pc[d + 1].min() > t_pc[d].max() for d in range(len(depths) - 1)), t_pc
    assert np.all(t_bp[1:] <= t_pc[1:]), (t_bp, t_pc)
    levels = np.array(_rank_levels(x, y)[1:-1])
    for d, H in enumerate(depths):
        if H >= 3:
            for bp_end, pc_end in zip(sweep["bp"]["L"][d, 0, :, -1], sweep["pc"]["L"][d, 0, :, -1]):
                k = np.argmin(np.abs(bp_end / levels - 1))
                assert abs(bp_end / levels[k] - 1) < 0.01 and pc_end < levels[k], (H, bp_end, levels, pc_end)


def test_explaining_away_valley_sets_the_euler_stability_limit():
    """In the valley (lower layers zero, W_L = tA) the activity Hessian is block diagonal with blocks I and
    I + W_L^T W_L, so lambda_max = 1 + t^2 sigma_max(A)^2; Euler inference with dt converges to the equilibrium's
    gradient while dt lambda_max < 2 and does not once it is above 2."""
    x, y = _teacher_data(n=64)
    A = pclib.init_mlp(jax.random.key(0), [6, 8, 8, 8, 3], bias=False)[-1]["W"]
    s_max = np.linalg.svd(np.asarray(A), compute_uv=False)[0]
    dt = 0.1
    for t in (np.sqrt(9) / s_max, np.sqrt(25) / s_max):  # dt lambda_max = 1.0 and 2.6
        p = [{"W": jnp.zeros((8, 6))}, {"W": jnp.zeros((8, 8))}, {"W": jnp.zeros((8, 8))}, {"W": t * A}]
        lam = np.linalg.eigvalsh(np.asarray(theory.linear_activity_hessian(p)))
        assert np.isclose(lam[-1], 1 + t**2 * s_max**2, rtol=1e-10) and np.isclose(lam[0], 1.0, rtol=1e-10)
        zs = pclib.infer(p, x, y, act="linear", steps=300, dt=dt, check=False).activities
        top = pclib.pc_grads(p, zs, act="linear")[-1]["W"]
        exact = jax.grad(theory.equilibrated_energy)(p, x, y)[-1]["W"]
        gap = float(jnp.linalg.norm(top - exact) / jnp.linalg.norm(exact))
        if dt * lam[-1] < 2:
            assert gap < 1e-8, gap
        else:
            assert not gap < 1.0, gap  # diverges (or is nan)


def test_truncated_inference_stalls_at_depth_where_converged_inference_escapes():
    """Six hidden layers of width 8 on teacher data, step length 0.02, 1500 iterations, three seeds: PC at converged
    inference leaves the origin within the budget on every seed, PC with 50 Euler steps of dt 0.1 on none, its L
    within 1% of its start while its F* falls below 10% of its start, and at its end dt lambda_max of the activity
    Hessian is at the Euler limit 2 (between 1.9 and 2.1), and over 90% of the truncated gradient's squared norm is in
    the top layer."""
    x, y = _teacher_data()
    widths, iters = [6] + [8] * 6 + [3], 1500
    exact = saddles.matched_escape(x, y, widths=widths, lrs=(0.02,), iters=iters, method="pc", pc="exact")
    euler = saddles.matched_escape(x, y, widths=widths, lrs=(0.02,), iters=iters, method="pc", pc="euler")
    assert np.all(exact["t_L"] < iters) and np.all(euler["t_L"] == iters), (exact["t_L"], euler["t_L"])
    assert np.all(euler["L"][0, :, -1] > 0.99 * euler["L"][0, :, 0])
    assert np.all(euler["F"][0, :, -1] < 0.1 * euler["F"][0, :, 0])
    diag = saddles.truncation_diagnosis(euler["last"], x, y)
    edge = diag["dt_lambda_max"]
    assert np.all((edge > 1.9) & (edge < 2.1)), edge
    assert np.all(diag["top_share"] > 0.9), diag["top_share"]  # the normalised steps go into the top layer


def test_scale_settings_and_errors():
    assert saddles.ESCAPE["chapter"]["depths"] == (1, 2, 3, 4, 5, 6)
    grid = saddles.log_grid(3000)
    assert grid[0] == 0 and grid[-1] == 3000 and np.all(np.diff(grid) > 0) and np.array_equal(grid[:10], np.arange(10))
    x, y = _teacher_data(n=8)
    with pytest.raises(ValueError, match="linear nets only"):
        saddles.matched_escape(x, y, widths=[6, 4, 3], lrs=(0.1,), iters=2, method="pc", pc="exact", act="tanh")
