"""Explorable figures for the static HTML book: precomputed over a grid, redrawn by plotly.js, no kernel.

A chapter computes a figure's data with ``pclib`` for every value of a few controls (a slider over
numbers, or a drop-down of options), when the notebook is executed. :func:`figure` embeds all
frames as JSON with a stable id, plus a few lines of JavaScript that redraw the figure with
plotly.js whenever the reader moves a control. Nothing runs JAX in the browser: the figure shows
what ``pclib`` computed, at the grid values only.

plotly.js is not embedded in each figure: it is loaded once per page, from ``plotly/plotly.min.js``
at the root of the HTML book (``scripts/vendor_plotly.py`` copies it from the pinned plotly wheel
into ``_vendor/``). In Jupyter or Colab, where that file is not served, the figure says so; the
chapters' live ipywidgets controls are for those. The stored output is deterministic: ids come
from the figure's name and every number is rounded to :data:`DIGITS` significant digits, so it
compares equal under nbval on any machine.

The figures live in one module per concept: :mod:`~pclib.explore.inference` (chapter 1), :mod:`~pclib.explore.em` (chapter 2), :mod:`~pclib.explore.interpolation` (chapter 3), :mod:`~pclib.explore.trust_region` (chapter 4), :mod:`~pclib.explore.saddles` (chapter 5) and :mod:`~pclib.explore.depth` (chapter 6).
"""

from __future__ import annotations

import html
import itertools
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

DIGITS = 4
PLOTLY_SRC = "../../plotly/plotly.min.js"  # from book/chapters/<chapter>.html to the HTML root
COLORS = {"F": "black", "L": "#d62728", "E": "#1f77b4", "pc": "#1f77b4", "bp": "#ff7f0e", "theory": "#2ca02c"}

__all__ = ["COLORS", "Control", "DIGITS", "PLOTLY_SRC", "Figure", "figure", "line", "panels", "rounded", "stable_id"]


@dataclass(frozen=True)
class Control:
    """One control: ``values`` passed to the figure's compute function, ``labels`` shown to the reader.

    Numbers give a slider, strings a drop-down. ``default`` is the index shown first.
    """

    label: str
    values: Sequence[Any]
    default: int = 0
    fmt: str = "{:.3g}"

    def labels(self) -> list[str]:
        return [v if isinstance(v, str) else self.fmt.format(v) for v in self.values]

    @property
    def kind(self) -> str:
        return "select" if all(isinstance(v, str) for v in self.values) else "range"


def stable_id(name: str) -> str:
    """The figure's HTML id, derived from its name only (never random)."""
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", name):
        raise ValueError(f"an explorable figure's name must be lowercase letters, digits and '-'; got {name!r}")
    return f"pclib-explore-{name}"


def rounded(value: Any, digits: int = DIGITS) -> Any:
    """``value`` with every float rounded to ``digits`` significant digits (NaN and inf become None).

    Applied recursively to dicts, lists and arrays, so the embedded JSON does not change with float
    noise in the last digits. Strings, bools and ints pass unchanged.
    """
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v, digits) for v in value]
    if isinstance(value, (np.ndarray, np.generic)) or hasattr(value, "__array__"):
        arr = np.asarray(value)
        return rounded(arr.tolist(), digits) if arr.ndim else rounded(arr.item(), digits)
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    v = float(value)
    if not math.isfinite(v):
        return None
    return 0.0 if v == 0 else float(f"{v:.{digits - 1}e}")


def line(x: Any, y: Any, name: str = "", *, color: str | None = None, dash: str | None = None,
         mode: str = "lines", axis: int = 1, **extra: Any) -> dict:
    """A plotly scatter trace; ``axis`` selects the panel made by :func:`panels` (1, 2, ...)."""
    trace: dict[str, Any] = {"type": "scatter", "mode": mode, "x": x, "y": y, "name": name, "showlegend": bool(name)}
    style = {k: v for k, v in (("color", color), ("dash", dash)) if v is not None}
    if style:
        trace["line" if "lines" in mode else "marker"] = style
        if "markers" in mode and "lines" in mode and color:
            trace["marker"] = {"color": color}
    if axis > 1:
        trace["xaxis"], trace["yaxis"] = f"x{axis}", f"y{axis}"
    for key, value in extra.items():  # marker={"size": 9} adds to the colour set above
        trace[key] = {**trace[key], **value} if isinstance(value, dict) and isinstance(trace.get(key), dict) else value
    return trace


def panels(*axes: Mapping[str, Any], title: str = "", legend_y: float = 1.0) -> dict:
    """A plotly layout with one panel per ``axes`` entry side by side, each ``{"x": {...}, "y": {...}}``
    (plotly axis settings, e.g. ``{"title": {"text": "step"}, "type": "log"}``)."""
    n, gap = len(axes), 0.1
    width = (1 - gap * (n - 1)) / n
    layout: dict[str, Any] = {"margin": {"l": 60, "r": 20, "t": 40 if title else 20, "b": 50},
                              "legend": {"x": 1.0, "xanchor": "right", "y": legend_y, "bgcolor": "rgba(255,255,255,0.6)"},
                              "template": {"layout": {"font": {"size": 12}}}}
    if title:
        layout["title"] = {"text": title, "font": {"size": 13}}
    for i, ax in enumerate(axes, start=1):
        suffix = "" if i == 1 else str(i)
        layout[f"xaxis{suffix}"] = {"domain": [round((i - 1) * (width + gap), 4), round((i - 1) * (width + gap) + width, 4)],
                                    "anchor": f"y{suffix}", **dict(ax.get("x", {}))}
        layout[f"yaxis{suffix}"] = {"anchor": f"x{suffix}", **dict(ax.get("y", {}))}
        for key in (f"xaxis{suffix}", f"yaxis{suffix}"):
            if layout[key].get("type") == "log":
                layout[key].setdefault("exponentformat", "power")  # 10^-6 rather than 1µ
    return layout


class Figure:
    """The HTML of one explorable figure (``_repr_html_`` for Jupyter; ``.html`` for tests)."""

    def __init__(self, name: str, spec: dict, height: int):
        self.name, self.id, self.spec, self.height = name, stable_id(name), spec, height
        self.html = _render(self.id, spec, height)

    def __repr__(self) -> str:
        return f"<explorable figure {self.name!r}: open the HTML book to explore it>"

    def _repr_html_(self) -> str:
        return self.html

    def frame(self, **choice: int) -> dict:
        """The frame shown for the given control indices (default indices for the others)."""
        idx = [choice.get(c["key"], c["default"]) for c in self.spec["controls"]]
        return self.spec["frames"][int(np.ravel_multi_index(idx, [len(c["labels"]) for c in self.spec["controls"]]))]


def figure(name: str, compute: Callable[..., Any], controls: Mapping[str, Control], layout: Mapping[str, Any], *,
           caption: str = "", height: int = 330, src: str = PLOTLY_SRC, digits: int = DIGITS) -> Figure:
    """Precompute ``compute(**values)`` for every combination of the controls' values; return the figure.

    ``compute`` returns a list of plotly traces, or a dict ``{"data": traces, "layout": {...}}``
    whose layout entries replace the shared ``layout``'s for that frame (e.g. a title with the
    value). Keep the grid small: every frame is stored in the notebook and the page.
    """
    keys = list(controls)
    frames = []
    for combo in itertools.product(*(controls[k].values for k in keys)):
        out = compute(**dict(zip(keys, combo)))
        frame = out if isinstance(out, dict) else {"data": out}
        frames.append(rounded({"data": list(frame["data"]), "layout": dict(frame.get("layout", {}))}, digits))
    spec = {
        "src": src, "caption": caption, "layout": rounded(dict(layout), digits), "frames": frames,
        "controls": [{"key": k, "label": c.label, "kind": c.kind, "labels": c.labels(), "default": c.default}
                     for k, c in controls.items()],
    }
    return Figure(name, spec, height)


_JS = """(function () {
  var root = document.getElementById(%(id)s);
  if (!root || root.getAttribute("data-ready")) return;
  root.setAttribute("data-ready", "1");
  var spec = JSON.parse(root.querySelector("script.pclib-explore-data").textContent);
  var plot = root.querySelector(".pclib-explore-plot");
  var inputs = Array.prototype.slice.call(root.querySelectorAll("[data-control]"));
  var w = window;
  w.pclibPlotly = w.pclibPlotly || new Promise(function (ok, fail) {
    if (w.Plotly) return ok(w.Plotly);
    var s = document.createElement("script");
    s.src = spec.src;
    s.onload = function () { w.Plotly ? ok(w.Plotly) : fail(new Error("plotly.js did not load")); };
    s.onerror = fail;
    document.head.appendChild(s);
  });
  function frame() {
    var k = 0;
    inputs.forEach(function (el, i) {
      k = k * spec.controls[i].labels.length + Number(el.value);
      var out = root.querySelector('output[data-for="' + el.name + '"]');
      if (out) out.textContent = spec.controls[i].labels[Number(el.value)];
    });
    return spec.frames[k];
  }
  w.pclibPlotly.then(function (Plotly) {
    function draw() {
      var f = frame(), layout = JSON.parse(JSON.stringify(spec.layout));
      Object.keys(f.layout).forEach(function (key) { layout[key] = f.layout[key]; });
      Plotly.react(plot, JSON.parse(JSON.stringify(f.data)), layout, {displaylogo: false, responsive: true});
    }
    inputs.forEach(function (el) { el.addEventListener("input", draw); el.addEventListener("change", draw); });
    draw();
  }, function () {
    plot.textContent = "This figure is drawn by plotly.js, which the HTML book serves; in Jupyter or Colab " +
      "change the parameters in the code, or use the live controls.";
  });
})();"""


def _render(fig_id: str, spec: dict, height: int) -> str:
    ctl = []
    for c in spec["controls"]:
        name = html.escape(c["key"])
        if c["kind"] == "select":
            opts = "".join(f'<option value="{i}"{" selected" if i == c["default"] else ""}>{html.escape(lab)}</option>'
                           for i, lab in enumerate(c["labels"]))
            widget = f'<select name="{name}" data-control>{opts}</select>'
        else:
            widget = (f'<input type="range" name="{name}" data-control min="0" max="{len(c["labels"]) - 1}" step="1" '
                      f'value="{c["default"]}"> <output data-for="{name}">{html.escape(c["labels"][c["default"]])}</output>')
        ctl.append(f'<label style="margin-right:1.5em">{html.escape(c["label"])} {widget}</label>')
    data = json.dumps(spec, separators=(",", ":"), sort_keys=True).replace("</", "<\\/")
    caption = f'<div class="pclib-explore-caption" style="font-size:90%">{html.escape(spec["caption"])}</div>' \
        if spec["caption"] else ""
    return (f'<div class="pclib-explore" id="{fig_id}">\n'
            f'<div class="pclib-explore-controls">{"".join(ctl)}</div>\n'
            f'<div class="pclib-explore-plot" style="width:100%;height:{height}px"></div>\n{caption}\n'
            f'<script type="application/json" class="pclib-explore-data">{data}</script>\n'
            f'<script>{_JS % {"id": json.dumps(fig_id)}}</script>\n</div>')
