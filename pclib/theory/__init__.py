r"""The theory of PC networks in code: closed forms and the quantities the chapters compare
iterative inference and learning against.

One module per concept:

* :mod:`~pclib.theory.linear`: linear PCNs in closed form (activity Hessian, equilibrium, one
  layer's exact flow, equilibrated energy and its covariance $S$);
* :mod:`~pclib.theory.targets`: backprop errors and target-propagation targets;
* :mod:`~pclib.theory.interpolation`: where the equilibrium sits between them, over precision ratios and during
  inference;
* :mod:`~pclib.theory.precisions`: precision schemes and generalised energies;
* :mod:`~pclib.theory.descent`: how inference moves the loss (marginal condition, energy gradient bound);
* :mod:`~pclib.theory.trust_region`: the Fisher information of the activities and the trust-region view;
* :mod:`~pclib.theory.toy`: the two-weight toy chain and its landscapes;
* :mod:`~pclib.theory.saddles`: Hessians at the origin of linear networks, the Schur-complement view of
  the equilibrated energy's Hessian and the explaining-away valley;
* :mod:`~pclib.theory.depth`: the error wave of inference, the activity Hessian's conditioning with depth, and
  the μPC scalings (chapter 6);
* :mod:`~pclib.theory.util`: cosines, angles and relative errors of pytrees;
* :mod:`~pclib.theory.likelihood`: the exact marginal likelihood of linear PCNs;
* :mod:`~pclib.theory.lowrank`: bottleneck networks, backprop's reduced-rank optimum and PC's limit;
* :mod:`~pclib.theory.fixed_prediction`: inference with predictions frozen at the feedforward pass;
* :mod:`~pclib.theory.examples`: small hand-built networks.

Every public name is importable as ``pclib.theory.<name>``. The inference variants
:func:`~pclib.equilibria.equilibrium`, :func:`~pclib.equilibria.generalised_infer` and
:func:`~pclib.equilibria.generalised_train` live in
:mod:`pclib.equilibria`, next to inference, and are re-exported here.
"""

from __future__ import annotations

from typing import Any

from .depth import (
    activity_hessian_np, activity_spectrum, chain_lambda_min_bound, energy_loss_ratio, error_operator, euler_residuals, euler_steps_to,
    expected_output_covariance, expected_square_norms, fixed_time_profile, leading_order_errors, mupc_effective_weights, path_eigenvalues,
    standard_scales,
)
from .descent import loss_descent_rate, marginal_residual
from .examples import leaky_output_network
from .fixed_prediction import fixed_prediction_errors
from .likelihood import linear_log_likelihood
from .lowrank import LowRankLimit, least_squares_loss, low_rank_limits
from .linear import (
    equilibrated_energy, equilibrium_covariance, layer_flow, linear_activity_hessian, linear_equilibrated_energy,
    linear_equilibrium,
)
from .precisions import RATIO_SCHEMES, generalised_energy, lambda_precisions, random_precision_matrix, ratio_precisions
from .saddles import (
    explaining_away_energy, joint_hessian_schur, origin_hessians, origin_hvp, origin_spectra,
    zero_rank_energy_curvature,
)
from .interpolation import interpolation_course, interpolation_sweep
from .targets import (
    backprop_errors, equilibrium_residual, random_invertible_problem, sample_activity_hessians, tp_targets,
)
from .toy import (
    energy_grid, escape_steps, gd_path, gradient_grid, grid_2d, loss_grid, toy_energy_after, toy_equilibrated_energy,
    toy_loss, toy_params,
)
from .trust_region import (
    activity_gradient, blog_weight_gradient, fisher_information, natural_gradient_step, trust_region_decomposition,
    trust_region_energy, trust_region_radius, trust_region_step,
)
from .util import angle, cosine, relative_error, relative_error_trace, tree_cosine

_FROM_EQUILIBRIA = ("equilibrium", "generalised_infer", "generalised_train")


def __getattr__(name: str) -> Any:
    # Resolved on first use: pclib.equilibria itself builds on pclib.theory.linear.
    if name in _FROM_EQUILIBRIA:
        from .. import equilibria

        return getattr(equilibria, name)
    raise AttributeError(f"module 'pclib.theory' has no attribute {name!r}")


__all__ = [
    "LowRankLimit", "fixed_prediction_errors", "leaky_output_network", "least_squares_loss", "linear_log_likelihood",
    "low_rank_limits",
    "activity_hessian_np", "activity_spectrum", "chain_lambda_min_bound", "energy_loss_ratio", "error_operator", "euler_residuals", "euler_steps_to",
    "expected_output_covariance",
    "expected_square_norms", "fixed_time_profile", "leading_order_errors", "mupc_effective_weights", "path_eigenvalues",
    "standard_scales",
    "RATIO_SCHEMES", "activity_gradient", "angle", "backprop_errors", "blog_weight_gradient", "cosine", "energy_grid", "equilibrated_energy",
    "equilibrium", "equilibrium_covariance", "equilibrium_residual", "escape_steps", "explaining_away_energy",
    "fisher_information", "gd_path", "generalised_energy", "generalised_infer", "generalised_train", "gradient_grid", "grid_2d",
    "interpolation_course", "interpolation_sweep", "joint_hessian_schur", "lambda_precisions", "layer_flow",
    "linear_activity_hessian", "linear_equilibrated_energy", "linear_equilibrium", "loss_descent_rate", "loss_grid",
    "marginal_residual", "natural_gradient_step", "origin_hessians", "origin_hvp", "origin_spectra",
    "random_invertible_problem", "random_precision_matrix", "ratio_precisions", "relative_error",
    "relative_error_trace", "sample_activity_hessians", "toy_energy_after", "toy_equilibrated_energy", "toy_loss",
    "toy_params", "tp_targets", "tree_cosine", "trust_region_decomposition", "trust_region_energy",
    "trust_region_radius", "trust_region_step",
    "zero_rank_energy_curvature",
]
