"""Training with Optax: a pure core, devices, a run directory, and a resumable host driver.

From the inside out, one module each:

* :mod:`~rnnjax.training.step` — :class:`TrainState` ``(params, opt_state, step, key)``,
  :func:`make_train_step` (one ``value_and_grad`` and one Optax update) and
  :func:`run_steps` (steps as one ``lax.scan``, the batch of step ``s`` a function of
  (seed, s)). Pure functions: ``jax.jit`` and ``jax.vmap`` over seeds compose with them.
* :mod:`~rnnjax.training.devices` — :func:`use_cpu_cores`, :func:`data_parallel_mesh`,
  :func:`shard_batch`, :func:`replicate`: data parallelism with JAX's own sharding.
* :mod:`~rnnjax.training.run_dir` — the files of a run: config, ``metrics.jsonl``,
  ``summary.json``, each replaced atomically.
* :mod:`~rnnjax.training.host_loop` — :func:`fit`, the host driver: chunks, progress,
  evaluation, hooks, orbax checkpoints, resumption, Ctrl-C and non-finite handling.
* :mod:`~rnnjax.training.processes` — :func:`initialize_processes`: one run over several
  processes (hosts) with JAX's multi-controller runtime, and what ``fit`` asks of them.
* :mod:`~rnnjax.training.stateful` — truncated backpropagation through time: documents in
  consecutive chunks, the carry passed from step to step and reset where a document starts.
"""

from rnnjax._src.training.devices import (
    DATA_AXIS,
    data_parallel_mesh,
    replicate,
    shard_batch,
    use_cpu_cores,
)
from rnnjax._src.training.host_loop import EarlyStopping, FitResult, Schedule, fit
from rnnjax._src.training.processes import initialize_processes
from rnnjax._src.training.run_dir import load_config, read_metrics, save_config
from rnnjax._src.training.stateful import (
    CarriedState,
    Chunks,
    chunk_at,
    document_chunks,
    init_stateful_train_state,
    make_stateful_train_step,
    reset_carry,
)
from rnnjax._src.training.step import (
    NonFiniteError,
    TrainState,
    eval_key,
    init_train_state,
    make_train_step,
    run_steps,
)

__all__ = [
    "CarriedState",
    "Chunks",
    "DATA_AXIS",
    "EarlyStopping",
    "FitResult",
    "NonFiniteError",
    "Schedule",
    "TrainState",
    "chunk_at",
    "data_parallel_mesh",
    "document_chunks",
    "eval_key",
    "fit",
    "init_stateful_train_state",
    "init_train_state",
    "initialize_processes",
    "load_config",
    "make_stateful_train_step",
    "make_train_step",
    "read_metrics",
    "replicate",
    "reset_carry",
    "run_steps",
    "save_config",
    "shard_batch",
    "use_cpu_cores",
]
