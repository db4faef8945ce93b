r"""Benchmark: what a PC training step costs against backprop, and against its arithmetic floor.

    python -m pclib.bench                        # every item, configs A, B, C; writes bench_out/
    python -m pclib.bench --configs A,C --out book/bench
    python -m pclib.bench --quick                # tiny sizes and few repeats: a smoke test

It writes ``bench.json`` (every number, with the device, date and machine load) and ``bench.md``
(the same as markdown tables) into ``--out``.

**The floor.** Count multiply-adds per sample in matrix products, with $c_l = d_{l-1} d_l$ for
layer $l$. A backprop step runs the forward pass ($\sum_l c_l$), the weight gradients
($\sum_l c_l$) and the activity gradients of layers $2..L$ ($\sum_{l \ge 2} c_l$). A PC step with
$T$ Euler inference steps from the feedforward pass runs the forward pass and the weight
gradients too, and in each inference step the predictions and the transposed errors of layers
$2..L$; layer 1's prediction is constant while the input is clamped. So

$$\mathrm{BP} = 2\sum_l c_l + \sum_{l\ge2} c_l, \qquad
\mathrm{PC} = 2\sum_l c_l + 2T\sum_{l\ge2} c_l,$$

and $\mathrm{PC}/\mathrm{BP}$ is the floor of the measured time ratio: time above it is
overhead (dispatch, recompilation, copies), time below it means the backprop step itself runs
above its own floor (small matrices, fixed per-call costs).

**Adding an item.** Write a function ``item(opts: Options) -> Section`` and decorate it with
``@register("name")``: it then runs with the others, lands in the JSON under its name and in
the markdown as a table. ``Section.columns`` says which row keys become table columns.
"""

from .core import *  # noqa: F401,F403
from .core import _cell, main  # noqa: F401
from .training import *  # noqa: F401,F403
from .closed_forms import *  # noqa: F401,F403
from .equilibrium_time import *  # noqa: F401,F403
from .closed_forms import _hidden, _linear_reference, _rel  # noqa: F401
from .overhead import *  # noqa: F401,F403
