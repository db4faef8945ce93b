"""pclib.compare: PC against BP at each method's own best rate, with known answers."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import pclib
from pclib import learning
from pclib.compare import Comparison, compare


def _data(seed, n, d_in, d_out, *, linear=False):
    kx, kw = jax.random.split(jax.random.key(seed))
    x = jax.random.normal(kx, (n, d_in))
    y = x @ jax.random.normal(kw, (d_in, d_out)) / np.sqrt(d_in)
    return x, (y if linear else jnp.tanh(y))


def _numpy_gd(W0, x, y, lr, iterations):
    """Full-batch gradient descent on L(W) = |Y - X W^T|^2 / 2N, in numpy: the loss before each update."""
    W, X, Y, n = np.array(W0), np.asarray(x), np.asarray(y), x.shape[0]
    out = []
    for _ in range(iterations):
        R = Y - X @ W.T
        out.append(0.5 * np.sum(R**2) / n)
        W = W + lr * R.T @ X / n
    return np.array(out)


def test_linear_regression_picks_the_best_rate_and_flags_rates_beyond_two_over_lambda_max():
    """One linear layer (PC = BP, no hidden layer), full batch: the loss after k steps of GD is known
    (a numpy loop), rates above 2 / lambda_max(X^T X / N) diverge, and the chosen rate is the one with
    the lowest mean loss over seeds."""
    x, y = _data(0, 32, 4, 2, linear=True)
    x = x * jnp.array([3.0, 1.0, 0.5, 0.2])  # spread the curvatures
    lam = np.linalg.eigvalsh(np.asarray(x.T @ x) / 32)[-1]
    lrs = np.array([0.1, 0.3, 0.6, 0.95, 1.5, 3.0]) * 2 / lam
    init = lambda k: pclib.init_mlp(k, [4, 2], bias=False)
    iterations = 40
    r = compare(init, x, y, lrs=lrs, act="linear", epochs=iterations, batch_size=32, steps=5, dt=0.1)
    assert isinstance(r, Comparison) and r.losses.shape == (2, 3, iterations)
    ref = np.array([[_numpy_gd(init(jax.random.key(s))[0]["W"], x, y, lr, iterations) for lr in lrs] for s in (0, 1, 2)])
    ref_scores = np.array([[learning.run_score(c) for c in per_seed] for per_seed in ref])
    assert np.all(np.isfinite(ref_scores[:, lrs < 2 / lam])) and np.all(np.isinf(ref_scores[:, lrs > 2 / lam]))
    best = lrs[np.argmin(ref_scores.mean(0))]
    for i in range(2):
        np.testing.assert_array_equal(np.isinf(r.scores[i]), np.isinf(ref_scores))
        finite = np.isfinite(ref_scores)
        np.testing.assert_allclose(r.scores[i][finite], ref_scores[finite], rtol=1e-10)
        np.testing.assert_allclose(r.best_lr[i], best)
        np.testing.assert_allclose(r.losses[i], ref[:, list(lrs).index(best)], rtol=1e-10)
    np.testing.assert_allclose(r.grad_ratio, 1.0, rtol=1e-12)  # one layer: PC's gradient is BP's
    assert np.all(r.equilibrium_gap < 1e-12)


def test_scores_and_rates_equal_lr_grid_search_per_seed():
    """With select='per_seed' and one minibatch order, every score and every chosen rate is the one
    pclib.learning.lr_grid_search finds with pclib.train (the reference loop)."""
    x, y = _data(1, 48, 5, 3)
    init = lambda k: pclib.init_mlp(k, [5, 8, 6, 3])
    lrs = [0.05, 0.2, 0.8, 5.0]
    opts = dict(epochs=3, batch_size=16, steps=8, dt=0.2)
    r = compare(init, x, y, lrs=lrs, select="per_seed", batch_seed=0, seeds=(0, 2), **opts)
    for j, s in enumerate((0, 2)):
        for i, m in enumerate(r.methods):
            ref = learning.lr_grid_search(init(jax.random.key(s)), x, y, lrs=lrs, method=m, progress=False,
                                          **(opts if m == "pc" else {k: opts[k] for k in ("epochs", "batch_size")}))
            got = r.scores[i, j]
            want = np.array([ref.scores[lr] for lr in lrs])
            np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
            np.testing.assert_allclose(got[np.isfinite(want)], want[np.isfinite(want)], rtol=1e-9)
            assert r.best_lr[i, j] == ref.best_lr


def _first_batch(x, y, *, seed, batch_size):
    stream, _ = learning.minibatch_stream(x, y, epochs=1, batch_size=batch_size, seed=seed)
    return next(iter(stream))


def test_gradient_norm_ratios_are_those_of_bp_grads_and_pc_grads():
    x, y = _data(2, 40, 5, 3)
    init = lambda k: pclib.init_mlp(k, [5, 9, 7, 3])
    r = compare(init, x, y, lrs=[0.1], seeds=(3, 4, 5), epochs=1, batch_size=20, steps=6, dt=0.1)
    norm = lambda t: float(jnp.sqrt(sum(jnp.sum(a**2) for a in jax.tree_util.tree_leaves(t))))
    for j, s in enumerate((3, 4, 5)):
        p = init(jax.random.key(s))
        xb, yb = _first_batch(x, y, seed=s, batch_size=20)
        g_bp = pclib.bp_grads(p, xb, yb)
        g_pc = pclib.pc_grads(p, pclib.infer(p, xb, yb, steps=6, dt=0.1).activities)
        assert r.grad_ratio[j] == pytest.approx(norm(g_bp) / norm(g_pc), rel=1e-10)
        np.testing.assert_allclose(r.grad_ratio_layers[j], [norm(a) / norm(b) for a, b in zip(g_bp, g_pc)], rtol=1e-10)
        assert r.grad_ratio[j] > 1  # PC's gradient is the shorter one


def test_seeds_give_both_methods_the_same_start():
    """Same initialisation and first minibatch for PC and BP: the first losses are identical, they
    equal the loss of init(key(seed)) on that batch, and different seeds start differently."""
    x, y = _data(3, 40, 5, 3)
    init = lambda k: pclib.init_mlp(k, [5, 9, 3])
    r = compare(init, x, y, lrs=[0.1, 0.3], seeds=(7, 8, 9), epochs=2, batch_size=10, steps=5, dt=0.1)
    np.testing.assert_allclose(r.losses[0, :, 0], r.losses[1, :, 0], rtol=1e-13)
    for j, s in enumerate((7, 8, 9)):
        xb, yb = _first_batch(x, y, seed=s, batch_size=10)
        assert r.losses[0, j, 0] == pytest.approx(float(pclib.mse_loss(init(jax.random.key(s)), xb, yb)), rel=1e-12)
    assert len(set(np.round(r.losses[0, :, 0], 12))) == 3
    listed = compare([init(jax.random.key(s)) for s in (7, 8, 9)], x, y, lrs=[0.1, 0.3], seeds=(7, 8, 9), epochs=2,
                     batch_size=10, steps=5, dt=0.1)
    np.testing.assert_array_equal(listed.losses, r.losses)  # a list of initial params is the same start
    mean, lo, hi = r.band("pc")
    assert np.all(lo <= mean) and np.all(mean <= hi) and mean.shape == (r.losses.shape[-1],)


def test_matched_mode_steps_have_length_lr_for_both_methods():
    """Normalised SGD: every update has global norm exactly lr, PC and BP alike, though their raw
    gradients differ several-fold in length."""
    x, y = _data(4, 32, 5, 3)
    init = lambda k: pclib.init_mlp(k, [5, 8, 8, 3])
    lrs = [0.01, 0.03, 0.1]
    r = compare(init, x, y, lrs=lrs, mode="matched", epochs=2, batch_size=8, steps=5, dt=0.1)
    for i in range(2):
        for j in range(3):
            np.testing.assert_allclose(r.step_lengths[i, j], r.best_lr[i, j], rtol=1e-12)
    t = compare(init, x, y, lrs=[0.1], mode="tuned", epochs=1, batch_size=8, steps=5, dt=0.1)
    assert np.all(t.step_lengths[1, :, 0] > t.step_lengths[0, :, 0])  # at one rate, BP's step is the longer


def test_equilibrium_gap_is_small_for_many_steps_and_large_for_one():
    """PC's gradient after T steps against the one at the converged equilibrium: ~0 for large T,
    large for T = 1 in a deep net, where one step from the feedforward pass moves only the top layer."""
    x, y = _data(5, 16, 4, 2)
    deep = lambda k: pclib.init_mlp(k, [4] + [6] * 7 + [2])
    opts = dict(lrs=[0.05], epochs=1, batch_size=16)
    far = compare(deep, x, y, steps=1, dt=0.1, **opts)
    assert np.all(far.equilibrium_gap > 0.5) and np.all(far.residual > 0.5)
    near = compare(deep, x, y, steps=3000, dt=0.2, **opts)
    assert np.all(near.equilibrium_gap < 1e-6) and np.all(near.residual < 1e-6)
    assert np.all(near.equilibrium_residual < 1e-8) and np.all(far.equilibrium_residual < 1e-8)


def test_training_at_equilibrium_takes_the_equilibrium_gradient_every_update():
    """With solver='newton' and a tolerance, every PC update uses the gradient at a certified equilibrium:
    two updates replayed by hand from theory.equilibrium (its own solve) and pc_grads give the same losses,
    and the largest residual over training is below the tolerance, where 3 Euler steps are far from it."""
    x, y = _data(8, 24, 4, 2)
    init = lambda k: pclib.init_mlp(k, [4, 6, 6, 2])
    lr, tol = 0.3, 1e-9
    r = compare(init, x, y, lrs=[lr], seeds=(0, 1), epochs=3, batch_size=24, steps=50, solver="newton", tol=tol)
    assert np.all(r.train_residual < tol) and np.all(r.equilibrium_gap < 1e-6)
    for j, s in enumerate((0, 1)):
        p = init(jax.random.key(s))
        replay = []
        for _ in range(3):  # full batch: every update sees all 24 samples (the order does not matter)
            replay.append(float(pclib.mse_loss(p, x, y)))
            z = pclib.theory.equilibrium(p, x, y, act="tanh", tol=1e-12)
            p = jax.tree_util.tree_map(lambda w, g: w - lr * g, p, pclib.pc_grads(p, z))
        np.testing.assert_allclose(r.losses[0, j], replay, rtol=1e-8)
    euler = compare(init, x, y, lrs=[lr], seeds=(0, 1), epochs=3, batch_size=24, steps=3, dt=0.1)
    assert np.all(euler.train_residual > 1e3 * tol)
    assert "newton inference to max|dF/dz| < 1e-09" in r.summary()


def test_eval_reports_test_metrics_and_summary_prints():
    x, y = _data(6, 40, 5, 3)
    onehot = jax.nn.one_hot(jnp.argmax(y, 1), 3)
    init = lambda k: pclib.init_mlp(k, [5, 8, 3])
    r = compare(init, x[:30], onehot[:30], lrs=[0.1, 0.5], epochs=3, batch_size=10, eval=(x[30:], onehot[30:]),
                optimizer=lambda lr: optax.sgd(lr, momentum=0.9))
    assert r.test_loss.shape == (2, 3) and np.all((0 <= r.test_accuracy) & (r.test_accuracy <= 1))
    text = r.summary()
    assert "PC" in text and "BP" in text and "|BP gradient| / |PC gradient|" in text and "accuracy" in text


def test_bad_options_are_named():
    x, y = _data(7, 8, 2, 1)
    init = lambda k: pclib.init_mlp(k, [2, 1])
    with pytest.raises(ValueError, match="unknown mode"):
        compare(init, x, y, lrs=[0.1], mode="fair")
    with pytest.raises(ValueError, match="unknown solver"):
        compare(init, x, y, lrs=[0.1], solver="rk4")
    with pytest.raises(ValueError, match="tol must be positive"):
        compare(init, x, y, lrs=[0.1], solver="newton", tol=0.0)
    with pytest.raises(ValueError, match="unknown select"):
        compare(init, x, y, lrs=[0.1], select="best")
    with pytest.raises(ValueError, match="positive rates"):
        compare(init, x, y, lrs=[])
    with pytest.raises(ValueError, match="diverged at every rate"):
        compare(init, x * 100, y, lrs=[10.0], batch_size=8, epochs=5)


def test_float32_data_with_float64_params():
    """Data stored in float32 (as pclib.data's digits and MNIST) with float64 networks trains and reports
    PC's largest inference residual in float64."""
    x, y = _data(8, 24, 4, 2)
    r = compare(lambda k: pclib.init_mlp(k, [4, 6, 2]), x.astype(jnp.float32), y.astype(jnp.float32), lrs=[0.1],
                seeds=(0, 1), epochs=1, batch_size=8, steps=5, dt=0.1)
    assert r.train_residual.dtype == np.float64 and np.all(r.train_residual > 0)


def test_tuned_and_matched_share_one_compiled_run():
    """The mode is an argument of the compiled run, not part of it: after a tuned comparison, a matched one
    with the same options, shapes and number of rates compiles no new training program."""
    from conftest import count_compilations

    x, y = _data(9, 24, 4, 2)
    init = lambda k: pclib.init_mlp(k, [4, 6, 2])
    opts = dict(seeds=(0, 1), epochs=1, batch_size=8, steps=5, dt=0.1, optimizer=optax.sgd)
    compare(init, x, y, lrs=[0.1, 0.3], mode="tuned", **opts)
    with count_compilations() as n:
        r = compare(init, x, y, lrs=[0.01, 0.03], mode="matched", **opts)
    assert n["n"] == 0
    np.testing.assert_allclose(r.step_lengths, r.best_lr[:, :, None] * np.ones_like(r.step_lengths), rtol=1e-12)
