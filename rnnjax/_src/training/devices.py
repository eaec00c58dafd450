"""Devices and sharding: every core of a CPU, a data-parallel mesh, and batches split over it."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.core
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

Batch = Any
DATA_AXIS = "data"


def use_cpu_cores(num: int | None = None) -> int:
    """Makes JAX show the host CPU as ``num`` devices, so that data parallelism uses every core.

    One XLA:CPU program runs a recurrent loop on one core: the matmuls of a step are too
    small for its thread pool. With one CPU device per core, :func:`fit` (whose default
    mesh is every device) and any ``jit`` over a batch split with :func:`shard_batch` run
    one slice of the batch per core: an LSTM's fwd+bwd at B=32, T=200, H=128 went from
    56.3 ms to 26.2 ms on two cores (docs/benchmarks.md). It changes nothing on GPU or
    TPU, and it takes precedence over ``--xla_force_host_platform_device_count``.

    Call it right after ``import rnnjax``, before JAX computes anything: JAX fixes its CPU
    devices when its backend starts.

    Args:
      num: the number of CPU devices; default: the cores this process may run on.

    Returns:
      ``num``.

    Raises:
      ValueError: ``num`` is not a positive int.
      RuntimeError: JAX's backend has already started with another number of CPU devices.
    """
    if num is None:
        num = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if not isinstance(num, (int, np.integer)) or isinstance(num, bool) or num < 1:
        raise ValueError(f"num must be a positive int (CPU devices), got {num!r}")
    num = int(num)
    try:
        jax.config.update("jax_num_cpu_devices", num)
    except RuntimeError:  # the backend has started: fine if it has what was asked
        have = len(jax.devices("cpu"))
        if have != num:
            raise RuntimeError(
                f"use_cpu_cores(num={num}) must run before JAX computes anything: its CPU "
                f"backend already started with {have} device(s); call it right after "
                f"`import rnnjax`"
            ) from None
    return num


def data_parallel_mesh(devices: Sequence[Any] | None = None) -> Mesh:
    """Returns a 1-D ``Mesh`` with axis ``"data"`` over ``devices`` (default: all, all hosts)."""
    devices = jax.devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("devices must be a non-empty sequence of jax devices, got []")
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def shard_batch(batch: Batch, mesh: Mesh) -> Batch:
    """Returns ``batch`` with every leaf's leading (batch) axis split over the mesh's devices.

    Usable inside ``jit`` (a sharding constraint) and outside it (a ``device_put``). Scalars
    are replicated. Raises ValueError if a leading axis is not divisible by the device count.
    """
    n = mesh.devices.size

    def put(x):
        shape = jnp.shape(x)
        if not shape:
            spec = PartitionSpec()
        elif shape[0] % n:
            raise ValueError(
                f"batch leading axis must be divisible by the {n} devices of the mesh, got "
                f"a leaf of shape {shape}; change the batch size or pass mesh="
                f"data_parallel_mesh(jax.devices()[:k])"
            )
        else:
            spec = PartitionSpec(DATA_AXIS)
        sharding = NamedSharding(mesh, spec)
        if isinstance(x, jax.core.Tracer):
            return jax.lax.with_sharding_constraint(x, sharding)
        return jax.device_put(x, sharding)

    return jax.tree.map(put, batch)


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Returns ``tree`` with every array replicated on all devices of ``mesh``."""
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))
