"""rnnjax: recurrent networks as pure functions in JAX, and the study of their gradient flow."""

from rnnjax import initializers, interop
from rnnjax import fused
from rnnjax import diagnostics, plots
from rnnjax.cells import Cell, elman, gru, irnn, lstm
from rnnjax.layers import Layer, bidirectional, recurrent, stack
from rnnjax.scan import reverse_valid, scan
from rnnjax import losses, models, readouts
from rnnjax.models import (
    Generator, Model, encoder_decoder, many_to_many, many_to_one, one_to_many, one_to_one,
)
from rnnjax import checkpoints, training
from rnnjax import tasks
from rnnjax.training import TrainState, fit, init_train_state, make_train_step, run_steps

__version__ = "0.1.0"

__all__ = [
    "Generator",
    "Model",
    "encoder_decoder",
    "losses",
    "many_to_many",
    "many_to_one",
    "models",
    "one_to_many",
    "one_to_one",
    "readouts",
    "Cell",
    "Layer",
    "TrainState",
    "checkpoints",
    "fit",
    "init_train_state",
    "make_train_step",
    "run_steps",
    "training",
    "bidirectional",
    "diagnostics",
    "elman",
    "fused",
    "gru",
    "initializers",
    "interop",
    "irnn",
    "lstm",
    "plots",
    "recurrent",
    "reverse_valid",
    "scan",
    "stack",
    "tasks",
]
