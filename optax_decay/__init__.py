"""optax_decay: every way of pulling weights toward zero, as composable Optax transforms."""

from optax_decay._adaptive import AdaptiveDecayState as AdaptiveDecayState
from optax_decay._adaptive import adaptive_decay as adaptive_decay
from optax_decay._adaptive import scale_by_adam as scale_by_adam
from optax_decay._alias import adam_l2 as adam_l2
from optax_decay._alias import adamp as adamp
from optax_decay._alias import adamw as adamw
from optax_decay._alias import prox_adam as prox_adam
from optax_decay._alias import sgd_l2 as sgd_l2
from optax_decay._alias import sgdw as sgdw
from optax_decay._convert import coupled_to_paper as coupled_to_paper
from optax_decay._convert import equilibrium_angular_update as equilibrium_angular_update
from optax_decay._convert import normalized_weight_decay as normalized_weight_decay
from optax_decay._convert import paper_to_coupled as paper_to_coupled
from optax_decay._convert import timescale_from_epochs as timescale_from_epochs
from optax_decay._convert import timescale_from_weight_decay as timescale_from_weight_decay
from optax_decay._convert import timescale_to_epochs as timescale_to_epochs
from optax_decay._convert import weight_decay_from_timescale as weight_decay_from_timescale
from optax_decay._cpr import CPRState as CPRState
from optax_decay._cpr import adamcpr as adamcpr
from optax_decay._cpr import cpr as cpr
from optax_decay._decoupled import DecoupledDecayState as DecoupledDecayState
from optax_decay._decoupled import cautious_decay as cautious_decay
from optax_decay._decoupled import decoupled_decay as decoupled_decay
from optax_decay._flat import FlatLayout as FlatLayout
from optax_decay._flat import flat_layout as flat_layout
from optax_decay._l2 import add_l2_to_grad as add_l2_to_grad
from optax_decay._masks import weight_decay_mask as weight_decay_mask
from optax_decay._masks import weight_decay_multipliers as weight_decay_multipliers
from optax_decay._precision import DecayPrecisionWarning as DecayPrecisionWarning
from optax_decay._precision import MasterWeightsState as MasterWeightsState
from optax_decay._precision import master_weights as master_weights
from optax_decay._projection import ProjectToNormState as ProjectToNormState
from optax_decay._projection import project_to_norm as project_to_norm
from optax_decay._prox import prox_l2 as prox_l2
from optax_decay._sparsity import prox_group_lasso as prox_group_lasso
from optax_decay._sparsity import prox_l1 as prox_l1
from optax_decay._stable import adams as adams

__version__ = "0.1.0"

__all__ = [
    "AdaptiveDecayState",
    "CPRState",
    "DecayPrecisionWarning",
    "MasterWeightsState",
    "ProjectToNormState",
    "DecoupledDecayState",
    "FlatLayout",
    "adam_l2",
    "adamcpr",
    "adamp",
    "adams",
    "adamw",
    "adaptive_decay",
    "add_l2_to_grad",
    "cautious_decay",
    "coupled_to_paper",
    "cpr",
    "decoupled_decay",
    "equilibrium_angular_update",
    "flat_layout",
    "master_weights",
    "normalized_weight_decay",
    "paper_to_coupled",
    "project_to_norm",
    "prox_adam",
    "prox_group_lasso",
    "prox_l1",
    "prox_l2",
    "scale_by_adam",
    "sgd_l2",
    "sgdw",
    "timescale_from_epochs",
    "timescale_from_weight_decay",
    "timescale_to_epochs",
    "weight_decay_from_timescale",
    "weight_decay_mask",
    "weight_decay_multipliers",
]
