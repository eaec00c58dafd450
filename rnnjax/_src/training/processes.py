"""Several processes, one run: JAX's multi-controller runtime, joined with bounded fault times.

On a cluster every host (or every GPU) runs one Python process of the same script. Once
``jax.distributed.initialize`` has connected them, ``jax.devices()`` lists the devices of all
processes and one jitted program over a mesh of them runs everywhere at once, each process
driving its own devices and XLA's collectives carrying the all-reduces between them (gloo
over TCP on CPU, NCCL on GPU, ICI on TPU). :func:`rnnjax.training.fit` needs nothing else:
its default mesh spans every process, its batch is made inside that program from
``(key, step)`` so that each device computes only its own rows, process 0 alone writes the
run directory, and orbax saves and restores checkpoints collectively.

What this module adds to JAX's runtime is what a training loop needs from several processes:

* :func:`initialize_processes` — ``jax.distributed.initialize`` with the fault timeouts
  stated and CPU collectives switched on, so that a dead process stops the others within
  a bounded time instead of leaving them blocked in a collective.
* :func:`any_process` — one decision for all (Ctrl-C pressed in some process: all stop at
  the same step, or their collectives would no longer match).
* :func:`check_same_on_all_processes` — the arguments every process must agree on (the
  initial state, the config) checked once, with an error naming what differs.
* :func:`note_failure` — the message a failing process adds to its error: which process it
  is, and that running the same command again resumes from the last complete checkpoint.

``python -m rnnjax.launch`` (:mod:`rnnjax.launch`) starts processes and calls
:func:`initialize_processes` before a script runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax._src import checks
from rnnjax._src.training.devices import use_cpu_cores

# The runtime's own defaults are 100 s (heartbeat) and 300 s (shutdown). The heartbeat
# timeout bounds how long the other processes go on after one is killed or hangs; a
# shorter one risks declaring a process dead while it is only slow (its heartbeats come
# from a C++ thread, so compiling or a busy Python loop does not delay them).
HEARTBEAT_TIMEOUT = 30
SHUTDOWN_TIMEOUT = 300
INITIALIZATION_TIMEOUT = 300


def initialize_processes(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    heartbeat_timeout: int = HEARTBEAT_TIMEOUT,
    shutdown_timeout: int = SHUTDOWN_TIMEOUT,
    initialization_timeout: int = INITIALIZATION_TIMEOUT,
    cpu_devices: int | None = None,
) -> None:
    """Connects this process to the others of its job (``jax.distributed.initialize``).

    Call it first, before JAX computes anything; ``python -m rnnjax.launch`` does. With no
    arguments JAX finds them in the cluster's environment (Slurm, Open MPI, Cloud TPU,
    Kubernetes, or ``JAX_COORDINATOR_ADDRESS``).

    Args:
      coordinator_address: ``"host:port"`` of process 0, reachable from every process.
      num_processes: the number of processes of the job.
      process_id: this process's index in ``0 .. num_processes - 1``.
      heartbeat_timeout: seconds without a heartbeat after which a process counts as dead;
        JAX's runtime then ends the others, also those blocked in a collective or barrier
        (a process that dies on a live host closes its connections, and the others fail
        sooner, in their next collective).
      shutdown_timeout: seconds a finished process waits at exit for the others to finish.
      initialization_timeout: seconds to wait for every process to connect.
      cpu_devices: JAX CPU devices in this process (:func:`use_cpu_cores`); default: JAX's.

    Raises:
      ValueError: a timeout is not a positive int.
      RuntimeError: JAX has already started computing (from JAX).
    """
    for name, seconds in (
        ("heartbeat_timeout", heartbeat_timeout),
        ("shutdown_timeout", shutdown_timeout),
        ("initialization_timeout", initialization_timeout),
    ):
        checks.positive_int(name, seconds)
    # Collectives between CPU processes; GPU and TPU ignore the setting.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if cpu_devices is not None:
        use_cpu_cores(cpu_devices)
    jax.distributed.initialize(
        coordinator_address,
        num_processes,
        process_id,
        heartbeat_timeout_seconds=heartbeat_timeout,
        shutdown_timeout_seconds=shutdown_timeout,
        initialization_timeout=initialization_timeout,
    )
    # Gloo connects the CPU processes at their first collective and waits only 30 s (a
    # constant in XLA) for the others to get there; a process slowed by a busy machine or a
    # long compile would then fail. So all meet at a barrier of the runtime (no such limit)
    # and make that first connection together, here.
    _barrier("rnnjax.initialize_processes", initialization_timeout)
    any_process(False)


def _barrier(name: str, timeout: int) -> None:
    """Returns once every process has called it with ``name``; waits at most ``timeout`` s."""
    from jax._src import distributed  # the runtime's client, as jax's own serialization uses

    client = distributed.global_state.client
    assert client is not None, "jax.distributed is initialised before any barrier"
    client.wait_at_barrier(name, timeout_in_ms=timeout * 1000)


def any_process(flag: bool) -> bool:
    """Returns whether ``flag`` is true in any process (``flag`` itself with one process).

    Every process must call it at the same point: it is a collective.
    """
    if jax.process_count() == 1:
        return bool(flag)
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.int32(bool(flag)))))


def _digest(tree: Any) -> np.ndarray:
    """Returns a (2,) uint32 fingerprint of a pytree's structure and values."""
    h = hashlib.blake2b(digest_size=8)
    leaves, treedef = jax.tree.flatten(tree)
    h.update(repr(treedef).encode())
    for leaf in leaves:
        if isinstance(leaf, (np.ndarray, np.generic, jax.Array)):
            h.update(f"{leaf.dtype}{leaf.shape}".encode())
            if not isinstance(leaf, jax.Array) or leaf.is_fully_addressable:
                if isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
                    leaf = jax.random.key_data(leaf)
                h.update(np.ascontiguousarray(jax.device_get(leaf)).tobytes())
        else:
            h.update(repr(leaf).encode())
    return np.frombuffer(h.digest(), np.uint32)


def check_same_on_all_processes(**values: Any) -> None:
    """Raises ValueError naming the ``values`` that differ between processes.

    Each value (a pytree of arrays, a dataclass, a number) is reduced to a fingerprint on
    its own process and the fingerprints are gathered, so nothing large moves. Arrays that
    already span several processes are compared by shape and dtype only. With one process
    it does nothing; with several, every process must call it (a collective).
    """
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils

    names = sorted(values)
    mine = np.stack([_digest(values[name]) for name in names])  # (k, 2)
    everyone = np.asarray(multihost_utils.process_allgather(mine))  # (processes, k, 2)
    differ = {
        name: np.flatnonzero((everyone[:, i] != everyone[0, i]).any(axis=-1)).tolist()
        for i, name in enumerate(names)
    }
    differ = {name: procs for name, procs in differ.items() if procs}
    if differ:
        which = "; ".join(
            f"{name}: processes {procs} differ from process 0" for name, procs in differ.items()
        )
        raise ValueError(
            f"every process must pass the same {', '.join(differ)} (the same script, seed and "
            f"config on every host), got different values: {which}"
        )


@contextlib.contextmanager
def note_failure(run_dir: str | os.PathLike | None) -> Iterator[None]:
    """Within it, an error of a process of several says which one, and how to resume.

    When one process dies the others fail in their next collective (an all-reduce of
    gradients, a checkpoint barrier); the note says that this may be the cause, and that
    running the same command again resumes from the last complete checkpoint.
    """
    try:
        yield
    except Exception as err:
        if jax.process_count() > 1:
            resume = (
                f"run the same command again to resume from the last complete checkpoint "
                f"in {os.path.join(os.fspath(run_dir), 'checkpoints')}"
                if run_dir is not None
                else "no run_dir was given, so there is no checkpoint to resume from"
            )
            err.add_note(
                f"[rnnjax] this is process {jax.process_index()} of {jax.process_count()}; if "
                f"another process died or was stopped, this process stops too: {resume}."
            )
        raise
