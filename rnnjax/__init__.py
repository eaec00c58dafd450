"""rnnjax: recurrent networks as pure functions in JAX, and the study of their gradient flow.

Cells (``elman``, ``lstm``, ``gru``) are records of pure functions for one example and one
step; ``scan`` is the time loop (the fastest loop the cell has; ``reference_scan`` is the loop
as written, ``scan_path`` says which runs); layers (``recurrent``, ``bidirectional``, ``stack``) map
whole sequences; batching is ``jax.vmap``. ``rnnjax.linen`` and ``rnnjax.nnx`` (imported
explicitly) wrap the same functions as Flax modules.
"""

from rnnjax import (
    attention,
    checkpoints,
    data,
    datasets,
    decoding,
    diagnostics,
    griffin,
    householder,
    initializers,
    interop,
    language_models,
    linear_cells,
    losses,
    mamba,
    models,
    padding,
    parallel_in_time,
    plots,
    readouts,
    registry,
    runs,
    seq2seq,
    tasks,
    training,
    xlstm,
)
from rnnjax.cells import Cell, GatedStep, elman, gated, gru, irnn, lstm
from rnnjax.checks import InvalidValueError, checked
from rnnjax.griffin import rg_lru
from rnnjax.language_models import LanguageModel, language_model
from rnnjax.layers import Layer, bidirectional, recurrent, stack
from rnnjax.linear_cells import LinearStep, lru, mingru, minlstm
from rnnjax.mamba import selective_ssm
from rnnjax.models import Model, many_to_many, many_to_one, one_to_one
from rnnjax.padding import reverse_valid
from rnnjax.scan import reference_scan, scan, scan_path
from rnnjax.seq2seq import Generator, encoder_decoder, one_to_many
from rnnjax.training import (
    TrainState,
    fit,
    init_train_state,
    make_train_step,
    run_steps,
    use_cpu_cores,
)
from rnnjax.xlstm import mlstm, slstm

__version__ = "0.1.0"

__all__ = [
    # cells, the time loop, layers
    "Cell",
    "GatedStep",
    "elman",
    "gated",
    "gru",
    "irnn",
    "lstm",
    "scan",
    "reference_scan",
    "scan_path",
    "reverse_valid",
    # cells linear in their state (parallel over time: rnnjax.parallel_in_time)
    "LinearStep",
    "lru",
    "mingru",
    "minlstm",
    "rg_lru",
    "selective_ssm",
    # xLSTM (Beck et al. 2024): sLSTM, and the mLSTM (linear in its matrix state)
    "mlstm",
    "slstm",
    # errors for values known only at run time
    "InvalidValueError",
    "checked",
    "Layer",
    "bidirectional",
    "recurrent",
    "stack",
    # the kinds of RNN
    "Generator",
    "LanguageModel",
    "Model",
    "encoder_decoder",
    "language_model",
    "many_to_many",
    "many_to_one",
    "one_to_many",
    "one_to_one",
    # training
    "TrainState",
    "fit",
    "init_train_state",
    "make_train_step",
    "run_steps",
    "use_cpu_cores",
    # modules
    "attention",
    "checkpoints",
    "data",
    "datasets",
    "diagnostics",
    "griffin",
    "householder",
    "initializers",
    "interop",
    "linear_cells",
    "losses",
    "mamba",
    "models",
    "padding",
    "parallel_in_time",
    "plots",
    "readouts",
    "registry",
    "runs",
    "seq2seq",
    "tasks",
    "training",
    "decoding",
    "language_models",
    "xlstm",
]
