"""rnnjax: recurrent networks as pure functions in JAX, and the study of their gradient flow.

Cells (``elman``, ``lstm``, ``gru``, ...) are records of pure functions for one example and
one step; ``scan`` is the time loop (the fastest loop the cell has; ``reference_scan`` is the
loop as written, ``scan_path`` says which runs); layers (``recurrent``, ``bidirectional``,
``stack``) map whole sequences; the model functions build the four kinds of RNN; batching is
``jax.vmap``. The modules hold the rest, one idea each: ``rnnjax.diagnostics``,
``rnnjax.training``, ``rnnjax.decoding``, ... ``rnnjax.linen``, ``rnnjax.nnx`` and
``rnnjax.study`` are imported explicitly. Everything under ``rnnjax._src`` is private.
"""

from rnnjax import (
    attention,
    checkpoints,
    data,
    datasets,
    decoding,
    diagnostics,
    initializers,
    interop,
    losses,
    padding,
    parallel_in_time,
    plots,
    readouts,
    tasks,
    training,
)
from rnnjax._src.cells import Cell, GatedStep, elman, gated, gru, irnn, lstm
from rnnjax._src.checks import InvalidValueError, checked
from rnnjax._src.griffin import rg_lru
from rnnjax._src.language_models import LanguageModel, language_model
from rnnjax._src.layers import Layer, bidirectional, recurrent, stack
from rnnjax._src.linear_cells import LinearStep, lru, mingru, minlstm
from rnnjax._src.mamba import selective_ssm
from rnnjax._src.models import Model, many_to_many, many_to_one, one_to_one
from rnnjax._src.registry import CELLS, make_cell
from rnnjax._src.scan import reference_scan, scan, scan_path
from rnnjax._src.seq2seq import Generator, encoder_decoder, one_to_many
from rnnjax._src.xlstm import mlstm, slstm
from rnnjax.training import TrainState, fit, init_train_state, make_train_step, use_cpu_cores

__version__ = "0.1.0"

__all__ = [
    # cells
    "Cell",
    "GatedStep",
    "LinearStep",
    "elman",
    "gated",
    "gru",
    "irnn",
    "lstm",
    "lru",
    "mingru",
    "minlstm",
    "rg_lru",
    "selective_ssm",
    "slstm",
    "mlstm",
    "CELLS",
    "make_cell",
    # the time loop
    "scan",
    "reference_scan",
    "scan_path",
    # layers
    "Layer",
    "recurrent",
    "bidirectional",
    "stack",
    # the kinds of RNN
    "Model",
    "Generator",
    "LanguageModel",
    "one_to_one",
    "one_to_many",
    "many_to_one",
    "many_to_many",
    "encoder_decoder",
    "language_model",
    # training
    "TrainState",
    "fit",
    "init_train_state",
    "make_train_step",
    "use_cpu_cores",
    # errors for values known only at run time
    "InvalidValueError",
    "checked",
    # modules
    "attention",
    "checkpoints",
    "data",
    "datasets",
    "decoding",
    "diagnostics",
    "initializers",
    "interop",
    "losses",
    "padding",
    "parallel_in_time",
    "plots",
    "readouts",
    "tasks",
    "training",
]
