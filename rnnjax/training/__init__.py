"""Training with Optax: a pure core, JAX's own sharding, and a resumable host driver.

* :func:`make_train_step`, :func:`init_train_state`, :func:`run_steps`: the pure core
  (``jax.jit`` and ``jax.vmap`` over seeds compose with it).
* :func:`fit`: the host driver (chunks, progress bar, evaluation, hooks, orbax checkpoints,
  resumption, Ctrl-C and non-finite handling), with :class:`Schedule` and
  :class:`EarlyStopping`; :func:`read_metrics` and :func:`load_config` read a run's ``metrics.jsonl`` and config.
* :func:`use_cpu_cores`, :func:`data_parallel_mesh`, :func:`shard_batch`,
  :func:`initialize_processes`: one run
  over many devices and processes.
* :func:`document_chunks`, :func:`chunk_at`, :func:`chunk_loss`, :func:`init_stateful_train_state`,
  :func:`make_stateful_train_step`: truncated backpropagation through time, the carry passed
  from chunk to chunk and reset where a document starts.
"""

from rnnjax._src.language_models import chunk_loss
from rnnjax._src.training.devices import data_parallel_mesh, shard_batch, use_cpu_cores
from rnnjax._src.training.host_loop import fit
from rnnjax._src.training.processes import initialize_processes
from rnnjax._src.training.run_dir import load_config, read_metrics
from rnnjax._src.training.schedule import EarlyStopping, Schedule
from rnnjax._src.training.stateful import (
    chunk_at,
    document_chunks,
    init_stateful_train_state,
    make_stateful_train_step,
)
from rnnjax._src.training.step import (
    NonFiniteError,
    TrainState,
    init_train_state,
    make_train_step,
    run_steps,
)

__all__ = [
    "EarlyStopping",
    "NonFiniteError",
    "Schedule",
    "TrainState",
    "chunk_at",
    "chunk_loss",
    "data_parallel_mesh",
    "document_chunks",
    "fit",
    "init_stateful_train_state",
    "init_train_state",
    "initialize_processes",
    "load_config",
    "make_stateful_train_step",
    "make_train_step",
    "read_metrics",
    "run_steps",
    "shard_batch",
    "use_cpu_cores",
]
