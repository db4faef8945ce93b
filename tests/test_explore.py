"""pclib.explore: the kernel-free figures of the HTML book (grid values, stable ids, rounding, wiring)."""

from __future__ import annotations

import json
import posixpath
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import jupytext
import numpy as np
import pytest

import pclib
from pclib import explore, theory
from pclib.explore import em as ch02, inference as ch01, saddles as ch05, trust_region as ch04

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "book" / "chapters").glob("*.md"))


def data_of(fig: explore.Figure) -> dict:
    """The JSON embedded in the figure's HTML."""
    m = re.search(r'<script type="application/json" class="pclib-explore-data">(.*?)</script>', fig.html, re.S)
    return json.loads(m.group(1).replace("<\\/", "</"))


def close(stored, direct, rtol=1e-3):
    stored = np.array([np.nan if v is None else v for v in stored], dtype=float)
    return np.allclose(stored, np.asarray(direct, dtype=float), rtol=rtol, atol=1e-12, equal_nan=True)


# ------------------------------------------------------------------------------------------- rounding, ids
def test_rounded_keeps_four_significant_digits():
    assert explore.rounded(3.14159265) == 3.142
    assert explore.rounded(-0.000123456789) == -0.0001235
    assert explore.rounded(123456.7) == 123500.0
    assert explore.rounded([float("nan"), float("inf"), 0.0, 2, "a", True]) == [None, None, 0.0, 2, "a", True]
    assert explore.rounded({"y": np.array([1.00001, 2.99999])}) == {"y": [1.0, 3.0]}
    # float noise in the last digits does not change the stored value
    assert explore.rounded(0.1 + 0.2) == explore.rounded(0.3) and explore.rounded(np.float32(0.3)) == 0.3


def test_ids_come_from_the_name():
    assert explore.stable_id("ch01-step-size") == "pclib-explore-ch01-step-size"
    for bad in ("Ch01", "a b", "", "-x", "a_b"):
        with pytest.raises(ValueError):
            explore.stable_id(bad)


def _toy_figure():
    return explore.figure("toy", lambda a, b: [explore.line([0, 1], [a, a * (b == "up") + 1 / 3])],
                          {"a": explore.Control("a", (1.0, 2.0, 3.0)), "b": explore.Control("b", ("up", "down"))},
                          explore.panels({"x": {"title": {"text": "x"}}}))


def test_figure_html_is_deterministic_and_local():
    a, b = _toy_figure(), _toy_figure()
    assert a.html == b.html, "the stored output must not change between runs (nbval compares it)"
    assert a.html.count('id="pclib-explore-toy"') == 1
    assert "http" not in a.html, "no request may leave the book"
    spec = data_of(a)
    assert spec["src"] == explore.PLOTLY_SRC and len(spec["frames"]) == 6
    assert [c["kind"] for c in spec["controls"]] == ["range", "select"]
    assert '<input type="range" name="a"' in a.html and '<select name="b"' in a.html
    # frames in C order over the controls: (a=2, b="down") is frame 3
    assert a.frame(a=1, b=1)["data"][0]["y"] == [2.0, 0.3333] == spec["frames"][3]["data"][0]["y"]
    assert "0x" not in repr(a) and "toy" in repr(a)


def test_plotly_path_resolves_to_the_vendored_file():
    """From book/chapters/<chapter>.html the figure loads plotly/plotly.min.js at the HTML root, which
    scripts/vendor_plotly.py puts in _vendor/ (copied to the root by html_extra_path)."""
    assert posixpath.normpath(posixpath.join("book/chapters", explore.PLOTLY_SRC)) == "plotly/plotly.min.js"
    assert 'DEST = ROOT / "_vendor" / "plotly" / "plotly.min.js"' in (ROOT / "scripts" / "vendor_plotly.py").read_text()
    for name in ("requirements.txt", "pyproject.toml"):
        assert "plotly==7.1.0" in (ROOT / name).read_text(), f"{name} must pin plotly (its plotly.js is served)"


# ------------------------------------------------------------------------------ grid values = direct pclib
def test_ch01_step_size_frame_is_pclib_inference():
    fig = ch01.step_size()
    for i in (0, 2, 4):
        params, x, y = pclib.random_problem(0, [6, 12, 12, 12, 3])
        res = pclib.infer(params, x, y, steps=60, dt=ch01.DTS[i], record=True)
        E = np.asarray(pclib.layer_energy_trace(params, res.trajectory))
        traces = fig.frame(dt=i)["data"]
        assert close(traces[0]["y"], E.sum(1)) and close(traces[1]["y"], E[:, -1])
        assert close(traces[2]["y"], E[:, :-1].sum(1))
        assert close(res.energies, E.sum(1), rtol=1e-9)


def test_ch02_one_layer_frame_is_pclib_inference():
    fig = ch02.one_layer()
    k = ch02.DT_FRACTIONS.index(1.0)
    params = [{"W": jnp.array([[0.3, 0.1], [-0.2, 0.4]]), "b": jnp.zeros(2)},
              {"W": jnp.diag(jnp.array([1.0, 3.0])), "b": jnp.zeros(2)}]
    x = jnp.array([[1.0, -0.5]])
    y = pclib.predict(params, x, act="linear") + 1.0
    lam_max = float(np.linalg.eigvalsh(np.asarray(theory.linear_activity_hessian(params)))[-1])
    res = pclib.infer(params, x, y, act="linear", steps=30, dt=1.0 / lam_max, record=True)
    L = [float(pclib.mse_loss([params[1]], z[None] if z.ndim == 1 else z, y, act="linear")) for z in res.trajectory[1]]
    assert close(fig.frame(frac=k)["data"][2]["y"], L)


@pytest.mark.parametrize("init", ["ffwd", "normal", "zeros"])
def test_ch02_loss_rate_data_is_pclib_inference(init):
    """The explorable loss-rate figure (one compiled program for every start) against a direct run of
    pclib.infer from the same start, with the layer energies and -dL/dt recomputed per step."""
    E, rate = ch02.loss_rate_data(0.3, init, steps=30, dt=0.1)
    params, x, y = pclib.random_problem(4, [8, 12, 12, 12, 4])
    pi = jnp.array([1.0, 1.0, 1.0, 0.3])
    res = pclib.infer(params, x, y, steps=30, dt=0.1, init=init, key=jax.random.key(4), precisions=pi, record=True)
    steps = [[z[k] for z in res.trajectory] for k in range(31)]
    assert close(E, [np.asarray(pclib.layer_energies(params, zs, precisions=pi)) for zs in steps])
    assert close(rate, [float(theory.loss_descent_rate(params, zs, precisions=pi).mean()) for zs in steps])


def test_ch04_bp_losses_are_gradient_descent_on_the_toy_loss():
    bp, _ = ch04.lr_data()
    loss = lambda w: theory.toy_loss(w, ch04.TOY_X, ch04.TOY_Y)
    for k in (0, 2):
        path = theory.gd_path(loss, jnp.array([1.2, 1.6]), lr=ch04.LRS[k], steps=40)
        assert np.allclose(bp[k], [float(loss(w)) for w in path], rtol=1e-9)


def test_ch05_origin_spectra_are_the_dense_hessians():
    x, y = ch05._ch05_data()
    for depth in (1, 2):
        hl, hf = ch05.origin_data(depth)
        HL, HF = theory.origin_hessians(ch05._ch05_widths(depth), x, y)
        assert np.allclose(hl, np.linalg.eigvalsh(np.asarray(HL)), atol=1e-9)
        assert np.allclose(hf, np.linalg.eigvalsh(np.asarray(HF)), atol=1e-9)


# ------------------------------------------------------------------------------------------- the chapters
@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_every_chapter_has_three_explorable_figures(md):
    cells = [c for c in jupytext.read(md).cells if c.cell_type == "code" and "explore." in c.source]
    assert len(cells) >= 3, f"{md.name}: fewer than three explorable figures"
    for c in cells:
        assert "hide-input" in c.metadata.get("tags", []) and "nbval-skip" not in c.metadata.get("tags", [])
    nb = json.loads(md.with_suffix(".ipynb").read_text())
    html = "".join("".join(o.get("data", {}).get("text/html", [])) for c in nb["cells"] if c["cell_type"] == "code"
                   for o in c.get("outputs", []))
    ids = re.findall(r'<div class="pclib-explore" id="([^"]+)"', html)
    assert len(ids) >= 3 and len(set(ids)) == len(ids), f"{md.name}: stored explorable figures {ids}"
    assert all(i.startswith(f"pclib-explore-{md.stem[:4]}-") for i in ids)
