"""Performance (issue 7): the cost floor, the inference loop against plain autodiff of the energy,
compilation counts, the benchmark's smoke run, and the performance page's chapter-times table.

No test asserts a wall-clock ratio: the CI machine is shared and timings are noisy; the benchmark
(`python -m pclib.bench`) reports them.
"""

import importlib.util
import json
import re
from pathlib import Path

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import pclib
from pclib import bench
from conftest import count_compilations, random_net

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- the floor
def test_floor_ratios_of_the_issue():
    """Issue 7 states the floors 5.4 (A), 10.7 (B) and 2.0 (C)."""
    got = {k: round(bench.floor_ratio(c.widths, c.steps), 1) for k, c in bench.CONFIGS.items()}
    assert got == {"A": 5.4, "B": 10.7, "C": 2.0}


def test_floor_counts_by_hand():
    """widths 3-4-5: c = (12, 20). BP = 2*32 + 20 = 84; PC with T = 2: 2*32 + 2*2*20 = 144."""
    assert bench.layer_costs([3, 4, 5]) == [12, 20]
    assert bench.bp_step_cost([3, 4, 5]) == 84
    assert bench.pc_step_cost([3, 4, 5], 2) == 144
    assert bench.floor_ratio([3, 4, 5], 2) == pytest.approx(144 / 84)
    # one layer: no activity gradients at all, so PC costs what BP costs for any T
    assert bench.floor_ratio([7, 2], 50) == 1.0


def test_floor_rejects_a_single_width():
    with pytest.raises(ValueError, match="at least an input and an output"):
        bench.floor_ratio([5], 3)


# ----------------------------------------------------------------------------- inference = autodiff of the energy
def reference_infer(params, zs, free, *, act, dt, steps, precisions):
    """Euler steps on each sample's full energy by plain autodiff, in a Python loop: the
    definition that pclib.infer's compiled loop must reproduce."""
    def total(free_z):
        full = list(zs)
        for i, z in zip(free, free_z):
            full[i] = z
        return jnp.sum(pclib.sample_energies(params, full, act=act, precisions=precisions))

    n = zs[0].shape[0]
    z = [zs[i] for i in free]
    traj, energies = [list(z)], []
    for _ in range(steps):
        f, g = jax.value_and_grad(total)(z)
        energies.append(f / n)
        z = [a - dt * b for a, b in zip(z, g)]
        traj.append(list(z))
    energies.append(total(z) / n)
    return z, jnp.stack(energies), traj


CASES = [
    (act, clamp, pi, out, [5, 7, 6, 3])
    for act in ("linear", "tanh", "relu")
    for clamp in (True, False)
    for pi in (None, "random")
    for out in ("clamped", "free")
] + [("tanh", True, "random", "free", [4, 3]), ("tanh", False, "random", "clamped", [4, 3]),
       ("tanh", False, "random", "free", [4, 3])]  # one layer (with both ends clamped nothing moves)


@pytest.mark.parametrize("act,clamp_input,pi,out,widths", CASES)
def test_infer_equals_autodiff_of_the_energy(act, clamp_input, pi, out, widths):
    """float64: activities, energies and the recorded trajectory agree with plain autodiff to ~1e-12."""
    seed = CASES.index((act, clamp_input, pi, out, widths))
    params, x, y = random_net(seed, widths, act=act, n=6)
    y = y if out == "clamped" else None
    L = len(params)
    if pi == "random":
        pi = jax.random.uniform(jax.random.key(seed), (L,), minval=0.5, maxval=2.0)
    free = pclib.inference.free_layers(L, clamp_input=clamp_input, clamp_output=y is not None)
    init = "normal" if out == "free" else "ffwd"
    key = jax.random.key(seed + 1)
    res = pclib.infer(params, x, y, act=act, steps=12, dt=0.05, init=init, key=key, clamp_input=clamp_input,
                      precisions=pi, record=True, check=False)
    zs = pclib.inference.initial_activities(params, x, y, act=act, init=init, key=key)
    z_ref, e_ref, traj_ref = reference_infer(params, zs, free, act=act, dt=0.05, steps=12, precisions=pi)
    for j, l in enumerate(free):
        np.testing.assert_allclose(res.activities[l], z_ref[j], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(res.trajectory[l], jnp.stack([t[j] for t in traj_ref]), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(res.energies, e_ref, rtol=1e-12, atol=1e-14)
    for l in set(range(L + 1)) - set(free):  # clamped layers do not move
        np.testing.assert_array_equal(res.activities[l], zs[l])


def _walk(jaxpr):
    """Every equation of a jaxpr, descending into sub-jaxprs (scan bodies, pjit, custom rules)."""
    for eqn in jaxpr.eqns:
        yield eqn
        for v in eqn.params.values():
            for u in v if isinstance(v, (list, tuple)) else [v]:
                sub = getattr(u, "jaxpr", u)
                if hasattr(sub, "eqns"):
                    yield from _walk(sub)


@pytest.mark.parametrize("clamp_input", [True, False])
def test_each_inference_step_costs_the_floor(clamp_input):
    """The traced loop body holds 2(L-1) matrix products, none touching the input width, when the
    input is clamped (predictions and transposed errors of layers 2..L); 2L when it is free."""
    params, x, y = random_net(0, [9, 5, 4, 3], n=6)  # d_0 = 9 appears nowhere else
    jp = jax.make_jaxpr(lambda p, a, b: pclib.infer(p, a, b, steps=3, clamp_input=clamp_input, check=False))(
        params, x, y)
    (scan,) = [e for e in _walk(jp.jaxpr) if e.primitive.name == "scan"]
    dots = [e for e in _walk(scan.params["jaxpr"].jaxpr) if e.primitive.name == "dot_general"]
    touches_input = [e for e in dots if any(9 in v.aval.shape for v in e.invars)]
    L = len(params)
    if clamp_input:
        assert len(dots) == 2 * (L - 1) and not touches_input
    else:
        assert len(dots) == 2 * L and len(touches_input) == 2


def test_make_step_uses_inference_and_pc_grads():
    """The compiled PC training step applies exactly pc_grads at infer's activities."""
    params, x, y = random_net(3, [5, 7, 6, 3], n=8)
    opt = optax.sgd(0.1)
    step = pclib.make_step(opt, method="pc", steps=7, dt=0.1)
    new, _, info = step(params, opt.init(params), x, y)
    res = pclib.infer(params, x, y, steps=7, dt=0.1)
    g = pclib.pc_grads(params, res.activities)
    for p, q, gl in zip(params, new, g):
        np.testing.assert_allclose(q["W"], p["W"] - 0.1 * gl["W"], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(info.energies, res.energies, rtol=1e-12)


# ----------------------------------------------------------------------------- compilation counts


@pytest.mark.parametrize("method", ["pc", "bp"])
def test_training_step_never_recompiles_for_new_data(method):
    """After the first call, new batches (and new parameters) of the same shapes compile nothing."""
    params = pclib.init_mlp(jax.random.key(0), [6, 8, 8, 3], dtype=jnp.float32)
    opt = optax.adam(1e-3)
    state = opt.init(params)
    step = pclib.make_step(opt, method=method, steps=5, dt=0.1)
    batches = [(jax.random.normal(jax.random.key(i), (8, 6), jnp.float32),
                jax.nn.one_hot(jnp.arange(8) % 3, 3, dtype=jnp.float32)) for i in range(5)]
    params, state, _ = step(params, state, *batches[0])
    jax.block_until_ready(params)
    with count_compilations() as c:
        for xb, yb in batches[1:]:
            params, state, _ = step(params, state, xb, yb)
        jax.block_until_ready(params)
    assert c["n"] == 0
    assert step._cache_size() == 1


def test_infer_never_recompiles_for_new_data():
    """Direct calls to infer with new data of the same shapes compile nothing after the first."""
    params, x, y = random_net(0, [5, 7, 3], n=8)
    pclib.infer(params, x, y, steps=5)
    rng = np.random.default_rng(10)  # new data drawn outside the counted block (a JAX draw compiles itself)
    batches = [(jnp.asarray(rng.standard_normal(x.shape)), jnp.asarray(rng.standard_normal(y.shape))) for _ in range(3)]
    with count_compilations() as c:
        for xb, yb in batches:
            pclib.infer(params, xb, yb, steps=5)
    assert c["n"] == 0


def test_compilation_counter_counts():
    """The counter itself sees a compilation (so the zero counts above can fail)."""
    with count_compilations() as c:
        jax.jit(lambda a: a * 3.0 + 1.0)(jnp.arange(7.0)).block_until_ready()
    assert c["n"] >= 1


# ----------------------------------------------------------------------------- the benchmark command
def test_bench_quick_smoke(tmp_path):
    """`python -m pclib.bench --quick` runs, writes JSON and markdown, and the PC step compiled once."""
    report = bench.main(["--quick", "--configs", "A", "--out", str(tmp_path), "--budget", "0.1"])
    data = json.loads((tmp_path / "bench.json").read_text())
    md = (tmp_path / "bench.md").read_text()
    assert data["device"] == report["device"] and data["device"] in md
    row = data["sections"]["training_step"]["rows"][0]
    assert row["config"] == "A" and row["pc_compilations"] == 1
    assert row["floor"] == pytest.approx(bench.floor_ratio(bench.QUICK_CONFIGS["A"].widths, 20))
    assert row["pc_ms"]["min"] <= row["pc_ms"]["median"] <= row["pc_ms"]["max"]
    lin = data["sections"]["linear_equilibrium"]["rows"][0]
    assert lin["closed_error"] <= 1e-6 and lin["infer_error"] <= 1e-6
    assert "| A |" in md and "linear_equilibrium" in md
    eq = data["sections"]["equilibrated_energy"]["rows"][0]
    assert eq["closed_error"] <= 1e-6 and eq["infer_error"] <= 1e-6 and "equilibrated_energy" in md
    lz = {(r["function"], r["which"]): r["eigenvalue"] for r in data["sections"]["lanczos"]["rows"]}
    assert lz[("F* (equilibrated energy)", "smallest")] <= lz[("F* (equilibrated energy)", "largest")]
    assert lz[("L (MSE)", "smallest")] <= lz[("L (MSE)", "largest")]
    eq_rows = data["sections"]["time_to_equilibrium"]["rows"]
    assert {r["method"] for r in eq_rows} >= {"Euler (pclib.infer)", "Newton-CG (pclib)"}
    assert all(r["residual"] < 1e-4 for r in eq_rows if "residual" in r) and "Time to equilibrium" in md


def test_steps_to_accuracy_is_the_first_step_below_tol():
    """The step count bench reports is minimal: one step fewer misses the tolerance."""
    with jax.enable_x64(True):
        params, x, y = pclib.random_problem(1, [6, 5, 5, 4], act="linear", n=4)
        z_ref, lo, hi = bench._linear_reference(params, x, y)
        np.testing.assert_allclose(z_ref, bench._hidden(pclib.theory.linear_equilibrium(params, x, y)), rtol=1e-10)
        dt = 2.0 / (lo + hi)
        T = bench.steps_to_accuracy(params, x, y, z_ref, dt=dt, tol=1e-6, chunk=7)
        run = lambda k: bench._rel(bench._hidden(pclib.infer(params, x, y, act="linear", steps=k, dt=dt).activities), z_ref)
        assert run(T) <= 1e-6 < run(T - 1)


def test_energy_steps_to_accuracy_is_the_first_step_below_tol():
    """Likewise for the energy: T steps reach the closed-form F* within tol, T - 1 do not."""
    with jax.enable_x64(True):
        params, x, y = pclib.random_problem(2, [6, 5, 5, 4], act="linear", n=4)
        _, lo, hi = bench._linear_reference(params, x, y)
        f_ref = float(pclib.theory.equilibrated_energy(params, x, y))
        dt = 2.0 / (lo + hi)
        T = bench.energy_steps_to_accuracy(params, x, y, f_ref, dt=dt, tol=1e-8, chunk=7)
        gap = lambda k: abs(float(pclib.infer(params, x, y, act="linear", steps=k, dt=dt).energies[-1]) - f_ref) / f_ref
        assert gap(T) <= 1e-8 < gap(T - 1)


def test_lanczos_item_matches_dense_spectra():
    """The curvature item's eigenvalues equal the ends of dense Hessian spectra (numpy eigvalsh)."""
    with jax.enable_x64(True):
        rows = bench.bench_lanczos(width=5, depth=2, d_in=4, d_out=3, batch=16)
        params = pclib.init_mlp(jax.random.key(0), [4, 5, 5, 3], bias=False)
        kx, kw = jax.random.split(jax.random.key(1))
        x = jax.random.normal(kx, (16, 4))
        y = x @ jax.random.normal(kw, (4, 3)) / 2.0
        fns = {"L (MSE)": lambda p: pclib.mse_loss(p, x, y, act="linear"),
               "F* (equilibrated energy)": lambda p: pclib.theory.equilibrated_energy(p, x, y)}
        for row in rows:
            flat, unravel = jax.flatten_util.ravel_pytree(params)
            ev = np.linalg.eigvalsh(np.asarray(jax.hessian(lambda w: fns[row["function"]](unravel(w)))(flat)))
            expected = ev[0] if row["which"] == "smallest" else ev[-1]
            assert row["eigenvalue"] == pytest.approx(expected, rel=1e-6, abs=1e-9), row


def test_steps_to_accuracy_says_when_it_gives_up():
    with jax.enable_x64(True):
        params, x, y = pclib.random_problem(1, [6, 5, 5, 4], act="linear", n=4)
        z_ref, _, _ = bench._linear_reference(params, x, y)
        with pytest.raises(RuntimeError, match="raise max_steps"):
            bench.steps_to_accuracy(params, x, y, z_ref, dt=1e-3, tol=1e-6, chunk=5, max_steps=10)


def test_bench_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown config"):
        bench.training_step_item(bench.Options(quick=True, configs=("Z",)))
    with pytest.raises(ValueError, match="unknown benchmark item"):
        bench.run(["nope"], bench.Options(quick=True))


def test_registry_runs_a_new_item(tmp_path):
    """The extension point: a registered item lands in the JSON and in the markdown."""
    @bench.register("toy_item")
    def toy(opts):
        return bench.Section("Toy", [{"a": 1.5}], [("a", "a value", "{:.1f}")], note="a note")

    try:
        report = bench.run(["toy_item"], bench.Options(quick=True))
        bench.write(report, tmp_path)
        assert json.loads((tmp_path / "bench.json").read_text())["sections"]["toy_item"]["rows"] == [{"a": 1.5}]
        assert "| 1.5 |" in (tmp_path / "bench.md").read_text()
    finally:
        bench.ITEMS.pop("toy_item")


# ----------------------------------------------------------------------------- the performance page
def _table_script():
    spec = importlib.util.spec_from_file_location("chapter_times_table", ROOT / "scripts" / "chapter_times_table.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_chapter_times_table_is_current():
    """book/bench/chapter_times.md lists every chapter with the time in book/chapter_times.json."""
    table = (ROOT / "book" / "bench" / "chapter_times.md").read_text()
    times = json.loads((ROOT / "book" / "chapter_times.json").read_text())
    fix = "run `python scripts/chapter_times_table.py` to refresh it"
    assert table == _table_script().table(), f"book/bench/chapter_times.md is stale: {fix}"
    rows = [line for line in table.splitlines() if re.match(r"\| ch\d", line)]
    chapters = sorted(p.stem for p in (ROOT / "book" / "chapters").glob("ch*.md"))
    assert [r.split("|")[1].strip() for r in rows] == chapters, fix
    for r in rows:
        name, seconds = r.split("|")[1].strip(), r.split("|")[2].strip()
        expected = f"{times[name]['seconds']:.1f}" if name in times else "not yet executed"
        assert seconds == expected, f"{name}: table says {seconds}, chapter_times.json says {expected}; {fix}"


def test_performance_page_shows_the_committed_benchmark():
    page = (ROOT / "book" / "performance.md").read_text()
    data = json.loads((ROOT / "book" / "bench" / "bench.json").read_text())
    assert not data["quick"], "the committed benchmark must be a full run, not --quick"
    assert "bench/bench.md" in page and "bench/chapter_times.md" in page
    assert data["device"] in page, "the page's text must name the device the committed numbers come from"
    assert (ROOT / "book" / "bench" / "bench.md").read_text() == bench.to_markdown(data)


def test_update_replaces_only_the_new_items_and_keeps_their_dates():
    """``--update`` merges a new run into the committed report: old sections keep their own date and load,
    new ones replace theirs, and a report from another device or a quick run is refused."""
    sec = lambda title: {"title": title, "rows": [{"x": 1}], "columns": [["x", "x", "{}"]], "note": ""}
    old = {"device": "cpu: X", "date": "2026-01-01 00:00 UTC", "jax": "0", "quick": False, "load_before": [1.0],
           "load_after": [1.5], "sections": {"a": sec("old a"), "b": sec("old b")}}
    new = {"device": "cpu: X", "date": "2026-02-02 00:00 UTC", "jax": "0", "quick": False, "load_before": [0.1],
           "load_after": [0.2], "sections": {"b": {**sec("new b"), "run": {"date": "2026-02-02 00:00 UTC",
                                                                             "load_before": [0.1], "load_after": [0.2]}}}}
    merged = bench.merge(old, new)
    assert list(merged["sections"]) == ["a", "b"]
    assert merged["sections"]["b"]["title"] == "new b"
    assert merged["sections"]["a"]["run"] == {"date": "2026-01-01 00:00 UTC", "load_before": [1.0], "load_after": [1.5]}
    md = bench.to_markdown(merged)
    assert "Measured 2026-01-01 00:00 UTC" in md and md.count("Measured") == 1
    with pytest.raises(ValueError, match="another --out"):
        bench.merge({**old, "device": "gpu: Y"}, new)
    with pytest.raises(ValueError, match="quick"):
        bench.merge({**old, "quick": True}, new)


def test_performance_page_shows_the_solver_report():
    """The later report (call overhead, time to equilibrium) is a full run, shown on the page, and its
    markdown is what its JSON renders to; each target it states is reported as met or not."""
    page = (ROOT / "book" / "performance.md").read_text()
    data = json.loads((ROOT / "book" / "bench" / "solvers" / "bench.json").read_text())
    assert not data["quick"]
    assert "bench/solvers/bench.md" in page
    assert set(data["sections"]) == {"call_overhead", "time_to_equilibrium"}
    assert (ROOT / "book" / "bench" / "solvers" / "bench.md").read_text() == bench.to_markdown(data)
