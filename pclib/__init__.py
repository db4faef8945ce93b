"""pclib: predictive coding networks in JAX, the library behind the executable textbook.

Modules: :mod:`~pclib.model` (networks), :mod:`~pclib.energy` (energy and loss),
:mod:`~pclib.inference` (activity dynamics), :mod:`~pclib.solvers` (Euler and Newton–CG to a tolerance),
:mod:`~pclib.equilibria` (equilibria), :mod:`~pclib.learning` (gradients, training),
:mod:`~pclib.compare` (PC against backprop, each at its best rate), :mod:`~pclib.theory` (closed forms),
:mod:`~pclib.data` (datasets), :mod:`~pclib.checks` (printed checks), :mod:`~pclib.plotting` and
:mod:`~pclib.widgets` (figures and controls).
"""

from .energy import (
    energy, energy_decomposition, errors, layer_energies, layer_energy_trace, mse_loss, predictions, sample_energies,
)
from .inference import Inference, InferenceDivergedError, NotConvergedError, WarmStartError, infer
from .learning import bp_grads, make_step, pc_grads, train
from .model import ACTIVATIONS, PARAMS, forward, get_activation, init_mlp, init_mupc, mupc_scales, predict, random_problem

__all__ = [
    "ACTIVATIONS", "PARAMS", "Inference", "InferenceDivergedError", "bp_grads", "energy", "energy_decomposition",
    "errors", "forward", "get_activation", "infer", "init_mlp", "init_mupc", "layer_energies", "layer_energy_trace", "make_step",
    "mse_loss", "mupc_scales", "NotConvergedError", "pc_grads", "predict", "predictions", "random_problem", "sample_energies", "train",
    "WarmStartError",
]
__version__ = "0.2.0"
