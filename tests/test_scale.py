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
    check_ch05_smoke(folder)
    capsys.readouterr()
    assert main(["--size", "smoke", "--out", str(tmp_path), "--only", "ch04"]) == 0  # resumes: nothing re-runs
    assert "done already" in capsys.readouterr().out


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
        chapter = next((ROOT / "book" / "chapters").glob(f"{exp.chapter}_*.md")).read_text()
        fn = exp.run.__name__
        assert re.search(rf"\b{fn}\(", chapter), f"{exp.chapter} does not call pclib.scale's {fn}"
