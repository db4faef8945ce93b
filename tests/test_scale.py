"""pclib.scale: every experiment runs at the smoke size, through the command, and writes its report;
the chapters' PAPER_SCALE branches call these same functions."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

from pclib import scale
from pclib.scale.__main__ import main

ROOT = Path(__file__).resolve().parents[1]


def test_smoke_runs_every_experiment_writes_its_report_and_resumes(tmp_path, capsys):
    assert main(["--size", "smoke", "--out", str(tmp_path)]) == 0
    folder = tmp_path / "smoke"
    for name, exp in scale.REGISTRY.items():
        rec = json.loads((folder / f"{name}.json").read_text())
        assert rec["size"] == "smoke" and rec["seconds"] > 0 and rec["device"]
        assert (folder / f"{name}.png").stat().st_size > 0 and (folder / f"{name}.svg").stat().st_size > 0
        assert name in (folder / "summary.md").read_text()
    comp = json.loads((folder / "ch04_deep_comparison.json").read_text())["result"]
    # PC at equilibrium: every update's inference met the tolerance; the T = 50 runs are not at equilibrium
    assert max(comp["near"]["train_residual"]) < 1e-4
    saddle = json.loads((folder / "ch04_deep_saddle.json").read_text())["result"]
    assert set(saddle["escape"]) == {"1", "2"} and np.asarray(saddle["escape"]["1"]).shape == (2, 3)
    # the numbers for the book's page: written at the run, and the same when rebuilt from the JSON alone
    saddle_md = (folder / "ch04_deep_saddle.md").read_text()
    assert "| 1 |" in saddle_md and "size `smoke`" in saddle_md.lower()
    assert "largest residual over the updates" in (folder / "ch04_deep_comparison.md").read_text()
    assert "median cosine" in (folder / "ch02_pc_vs_bp.md").read_text()
    assert "`W_L_growth`" in (folder / "ch02_linear_runs.md").read_text()
    assert "within the bound" in (folder / "ch03_precision_sweeps.md").read_text()
    assert "| 1 | 0.02 |" in (folder / "ch05_escape_depth.md").read_text()
    assert "Largest relative gap" in (folder / "ch05_energy_along_training.md").read_text()
    assert "HVP probe gap" in (folder / "ch05_origin_spectra.md").read_text()
    check_ch02(json.loads((folder / "ch02_pc_vs_bp.json").read_text())["result"],
               json.loads((folder / "ch02_linear_runs.json").read_text())["result"])
    check_ch03(json.loads((folder / "ch03_precision_sweeps.json").read_text())["result"])
    depth = json.loads((folder / "ch06_mupc_depth.json").read_text())["result"]
    S, U = len(depth["seeds"]), depth["updates"]
    assert set(depth["runs"]) == {"mupc_pc", "mupc_bp", "sp_pc", "sp_bp"}
    for r in depth["runs"].values():
        assert np.asarray(r["losses"]).shape == (S, U) and np.all(np.isfinite(r["losses"]))
        assert np.asarray(r["scores"]).shape == (S, len(r["lrs"])) and r["best_lr"] in r["lrs"]
        assert all(0.0 <= a <= 1.0 for a in r["test_accuracy"])
    for m in ("mupc_pc", "sp_pc"):
        start, end = np.asarray(depth["runs"][m]["residual_start"]), np.asarray(depth["runs"][m]["residual_end"])
        assert start.shape == end.shape == (S, U) and np.all(end < start)  # inference lowered every update's residual
        assert np.asarray(depth["runs"][m]["pc_layer_norms"]).shape == (S, depth["depth"])
        assert all(1 <= k <= depth["depth"] for k in depth["runs"][m]["layers_reached"])
    assert list(depth["transfer"]) == ["N=8, L=4", "N=8, L=6"]
    check_ch05_smoke(folder)
    capsys.readouterr()
    assert main(["--size", "smoke", "--out", str(tmp_path), "--only", "ch04"]) == 0  # resumes: nothing re-runs
    assert "done already" in capsys.readouterr().out
    assert main(["--size", "smoke", "--out", str(tmp_path), "--only", "ch04_deep_saddle", "--report"]) == 0
    assert (folder / "ch04_deep_saddle.md").read_text() == saddle_md


def check_ch05_smoke(folder):
    """Chapter 5's smoke results: the closed form meets converged inference, the probes and dense spectra meet the
    theorem, and every escape run has finite curves and escape times within its budget."""
    fig1 = json.loads((folder / "ch05_energy_along_training.json").read_text())["result"]
    assert fig1["gap"] < 1e-6 and set(fig1["runs"]["toy-small"]) == {"2", "3"}
    for run in fig1["runs"]["toy-small"].values():
        rows = np.asarray(run["rows"])
        assert rows.shape[1] == 3 and np.all(np.isfinite(rows)) and len(run["curve"]) == rows[-1, 0] + 1
    spec = json.loads((folder / "ch05_origin_spectra.json").read_text())["result"]
    for H, r in spec["nets"].items():
        assert r["probe_gap"] < 1e-10 and r["dense_gap"] < 1e-10, H
        assert abs(r["lanczos_F"] - r["theorem_F"][0]) < 1e-8 * abs(r["theorem_F"][0]) and r["theorem_F"][0] < 0
        assert len(r["theorem_L"]) == r["weights"]
    esc = json.loads((folder / "ch05_escape_depth.json").read_text())["result"]
    sweep, iters = esc["sweep"], esc["iters"]
    for m in ("pc", "bp"):
        L, t = np.asarray(sweep[m]["L"]), np.asarray(sweep[m]["t_L"])
        assert L.shape[:3] == (len(esc["depths"]), len(esc["lrs"]), 3) and L.shape[3] == len(sweep["grid"])
        assert np.all(np.isfinite(L)) and np.all((t >= 1) & (t <= iters))
    assert np.all(np.asarray(sweep["pc"]["t_F"]) < iters)  # the strict saddle of F*: PC's F* falls at every depth
    assert set(esc["euler"]) == {"linear-2", "tanh-1"} and set(esc["sgd"]) == {"tanh-1"}
    assert np.asarray(esc["euler"]["linear-2"]["diagnosis"]["grad_ratio"]).shape == (1, 3, 3)
    assert np.all(np.isfinite(np.asarray(esc["sgd"]["tanh-1"]["bp"]["L"])))


def test_bad_names_and_sizes_are_refused():
    with pytest.raises(SystemExit, match="unknown experiment or chapter"):
        main(["--only", "ch99"])
    with pytest.raises(ValueError, match="unknown size"):
        scale.deep.deep_saddle("huge")
    with pytest.raises(ValueError, match="unknown size"):
        scale.saddles.escape_across_depth("huge")


def test_chapters_paper_scale_branches_call_the_scale_experiments():
    """No second copy of an experiment: where a chapter has a registered experiment, its cells call it."""
    for exp in scale.REGISTRY.values():
        paths = sorted((ROOT / "book" / "chapters").glob(f"{exp.chapter}_*.md"))
        assert paths, f"{exp.name} is registered for {exp.chapter}, which has no chapter in book/chapters"
        chapter = paths[0].read_text()
        fn = exp.run.__name__
        assert re.search(rf"\b{fn}\(", chapter), f"{exp.chapter} does not call pclib.scale's {fn}"


def check_ch02(pvb, linear):
    """PC vs BP: finite curves of the right shape, cosines in [-1, 1], BP's gradient the longer one; the linear
    runs: the equilibrated energy F* falls at every record (exact E-steps, a small rate: prop-envelope)."""
    digits = pvb["results"]["digits"]
    for mode in ("tuned", "matched"):
        losses = np.asarray(digits[mode]["losses"])
        assert losses.shape[:2] == (2, 2) and np.all(np.isfinite(losses))  # (methods, seeds, iterations)
        assert np.min(digits[mode]["grad_ratio_layers"]) > 1.0
    for lr in pvb["cosine_lrs"]:
        cos = np.asarray(pvb["cosine"][str(lr)])
        assert cos.shape == (2, losses.shape[2]) and np.all(np.abs(cos) <= 1 + 1e-9)
        assert 0.0 <= pvb["share_below_0.9"][str(lr)] <= 1.0
    for name, runs in linear["runs"].items():
        for run in runs:
            rec = np.asarray(run["record"])
            assert rec.shape == (len(rec), 6) and len(rec) > 2 and np.all(np.isfinite(rec))
            assert np.all(np.diff(rec[:, 1]) < 0), f"{name}, seed {run['seed']}: F* rose"


def check_ch03(sw):
    """Every sweep point, the deep tanh ones included, is a certified equilibrium; the one-hidden-layer tanh
    sweeps match the ridge-path closed form and the linear ones stay within the theorem's bound."""
    assert sw["deep_failed"] == [] and sw["deep_tanh"]
    groups = list(sw["sweeps"].values()) + list(sw["deep_tanh"].values())
    assert all(rs for rs in groups)
    for rs in groups:
        for r in rs:
            assert np.all(np.asarray(r["residual"]) < np.asarray(r["tol"]))
    assert max(sw["ridge_gap"]) < 1e-8 and all(sw["bounds_ok"])
    assert max(sw["deep_summary"][k]["worst_residual_over_tol"] for k in sw["deep_tanh"]) < 1.0


def test_every_experiment_has_committed_medium_results_shown_on_the_book_page():
    """The Results-at-scale page shows each registered experiment's committed medium-size report and figure,
    and links each chapter's section; every report says the size and the device it ran on."""
    page = (ROOT / "book" / "results_at_scale.md").read_text()
    folder = ROOT / "book" / "scale" / "medium"
    for name, exp in scale.REGISTRY.items():
        rec = json.loads((folder / f"{name}.json").read_text())
        assert rec["size"] == "medium" and rec["device"] and rec["seconds"] > 0
        assert (folder / f"{name}.png").exists() and (folder / f"{name}.md").exists()
        assert f"scale/medium/{name}.md" in page and f"scale/medium/{name}.png" in page
        assert f"(scale-{exp.chapter})=" in page, f"no section for {exp.chapter} on the page"
        assert rec["device"] in (folder / f"{name}.md").read_text()
    assert "not run" in page  # no paper-size results without a GPU, and the page says so
