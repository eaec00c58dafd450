"""The implementation of :mod:`rnnjax.tasks` (its docstring describes it)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from rnnjax._src import checks

__all__ = [
    "TASKS",
    "Task",
    "adding_baseline",
    "adding_problem",
    "copy_baseline",
    "copy_memory",
    "make_task",
    "sample_batch",
    "temporal_order",
    "temporal_order_baseline",
]

Array = jax.Array


class Task(NamedTuple):
    """A sequence task as pure functions.

    Attributes:
      name: ``"adding"``, ``"copy"`` or ``"temporal_order"``.
      num_steps: length of every input sequence fed to the network.
      input_size: size of each ``xs[t]``.
      output_size: size of the readout the task expects at each step.
      sample: ``sample(key) -> (xs, target)``, one example with ``xs: (num_steps,
        input_size)``; ``target`` as documented by the task.
      loss: ``loss(outputs, target) -> scalar`` with ``outputs: (num_steps, output_size)``.
      accuracy: ``accuracy(outputs, target) -> scalar`` in [0, 1] for classification
        tasks (on the positions that carry information), or ``None``.
      baseline_loss: the loss of the best memoryless predictor (see each task).
      gap: the distance in steps the network must carry information across.
    """

    name: str
    num_steps: int
    input_size: int
    output_size: int
    sample: Callable[[Array], tuple[Array, Array]]
    loss: Callable[[Array, Array], Array]
    accuracy: Callable[[Array, Array], Array] | None
    baseline_loss: float
    gap: int


def _check_int(name: str, value: Any, minimum: int) -> None:
    if not checks.is_int(value) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def adding_baseline(num_steps: int | None = None) -> float:
    """Returns 1/6, the MSE of always predicting 1 on the adding problem (any length).

    The target is u + v with u, v ~ U[0, 1] independent, so E[target] = 1 and the best
    constant predictor's MSE is Var(u + v) = 2 · 1/12 = 1/6.
    """
    del num_steps
    return 1.0 / 6.0


def copy_baseline(num_blanks: int, num_symbols: int = 10, alphabet_size: int = 8) -> float:
    """Returns ``num_symbols · ln(alphabet_size) / (num_blanks + 2 · num_symbols)``.

    The memoryless strategy of Arjovsky, Shah & Bengio (2016): predict "blank" with
    certainty for the first ``num_blanks + num_symbols`` outputs (zero loss) and the uniform
    distribution over the alphabet for the last ``num_symbols`` (ln 8 each); the
    cross-entropy averaged over all ``T + 20`` steps is ``10 ln 8 / (T + 20)``.
    """
    return num_symbols * math.log(alphabet_size) / (num_blanks + 2 * num_symbols)


def temporal_order_baseline(num_steps: int | None = None) -> float:
    """Returns ln 4, the cross-entropy of the uniform guess over the four classes XX, XY, YX, YY."""
    del num_steps
    return math.log(4.0)


def adding_problem(num_steps: int) -> Task:
    """Returns the adding problem in its modern two-channel form (Le, Jaitly & Hinton 2015).

    Input ``xs: (T, 2)``: channel 0 holds values ~ U[0, 1]; channel 1 is 0 except for
    two markers, one at a uniform position in the first half ``[0, T/2)`` and one in the
    second half ``[T/2, T)``. Target: the sum of the two marked values, a scalar. The
    loss is the squared error of ``outputs[-1, 0]``; the baseline is 1/6
    (:func:`adding_baseline`). Originally Hochreiter & Schmidhuber (1997), experiment 4.
    """
    _check_int("num_steps", num_steps, 2)
    half = num_steps // 2

    def sample(key: Array) -> tuple[Array, Array]:
        k_val, k_first, k_second = jax.random.split(key, 3)
        values = jax.random.uniform(k_val, (num_steps,))
        first = jax.random.randint(k_first, (), 0, half)
        second = jax.random.randint(k_second, (), half, num_steps)
        markers = jnp.zeros((num_steps,)).at[first].set(1.0).at[second].set(1.0)
        return jnp.stack([values, markers], axis=1), values[first] + values[second]

    def loss(outputs: Array, target: Array) -> Array:
        return jnp.square(outputs[-1, 0] - target)

    return Task("adding", num_steps, 2, 1, sample, loss, None, adding_baseline(), num_steps - half)


def copy_memory(num_blanks: int, *, num_symbols: int = 10, alphabet_size: int = 8) -> Task:
    """Returns the copy-memory task of Arjovsky, Shah & Bengio (2016).

    Tokens: 0 = blank, 1..``alphabet_size`` = symbols, ``alphabet_size + 1`` = delimiter.
    Input (one-hot, ``T + 20`` steps for the defaults): 10 symbols drawn uniformly from 8,
    then ``T - 1`` blanks, the delimiter, and 10 blanks. Target tokens: ``T + 10`` blanks,
    then the 10 symbols. The loss is the cross-entropy averaged over all steps, and
    ``accuracy`` is the fraction of the 10 recalled symbols predicted correctly. The
    memoryless baseline is ``10 ln 8 / (T + 20)`` (:func:`copy_baseline`).

    ``target: (T + 20,)`` int32 token ids; ``xs: (T + 20, alphabet_size + 2)``.
    """
    _check_int("num_blanks", num_blanks, 1)
    _check_int("num_symbols", num_symbols, 1)
    _check_int("alphabet_size", alphabet_size, 2)
    num_steps = num_blanks + 2 * num_symbols
    vocab = alphabet_size + 2
    delimiter = alphabet_size + 1

    def sample(key: Array) -> tuple[Array, Array]:
        symbols = jax.random.randint(key, (num_symbols,), 1, alphabet_size + 1)
        blanks = jnp.zeros((num_blanks - 1,), jnp.int32)
        tail = jnp.zeros((num_symbols,), jnp.int32)
        tokens = jnp.concatenate([symbols, blanks, jnp.array([delimiter]), tail])
        target = jnp.concatenate([jnp.zeros((num_blanks + num_symbols,), jnp.int32), symbols])
        return jax.nn.one_hot(tokens, vocab), target

    def loss(outputs: Array, target: Array) -> Array:
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(outputs, target))

    def accuracy(outputs: Array, target: Array) -> Array:
        recalled = jnp.argmax(outputs[-num_symbols:], axis=-1)
        return jnp.mean(recalled == target[-num_symbols:])

    baseline = copy_baseline(num_blanks, num_symbols, alphabet_size)
    return Task(
        "copy",
        num_steps,
        vocab,
        alphabet_size + 1,
        sample,
        loss,
        accuracy,
        baseline,
        num_blanks + num_symbols,
    )


def temporal_order(num_steps: int) -> Task:
    """Returns the temporal-order task of Hochreiter & Schmidhuber (1997), experiment 6a.

    A sequence of ``T`` tokens from {a, b, c, d} (distractors) starts with B and ends
    with E; two relevant symbols, each X or Y, sit at positions ``t1 ~ U[0.1T, 0.2T]`` and
    ``t2 ~ U[0.5T, 0.6T]`` (the paper's 10–20 and 50–60 for T = 100). The class is the
    ordered pair XX, XY, YX, YY (0..3), read from ``outputs[-1]`` with cross-entropy; the
    baseline is ln 4 (:func:`temporal_order_baseline`).

    Tokens (one-hot, 8): a, b, c, d = 0..3, X = 4, Y = 5, B = 6, E = 7.
    ``xs: (T, 8)``, ``target``: int32 class in 0..3.
    """
    _check_int("num_steps", num_steps, 10)
    lo1, hi1 = max(1, round(0.1 * num_steps)), max(2, round(0.2 * num_steps))
    lo2, hi2 = round(0.5 * num_steps), min(num_steps - 1, round(0.6 * num_steps))

    def sample(key: Array) -> tuple[Array, Array]:
        k_tok, k_t1, k_t2, k_sym = jax.random.split(key, 4)
        tokens = jax.random.randint(k_tok, (num_steps,), 0, 4)
        tokens = tokens.at[0].set(6).at[-1].set(7)
        t1 = jax.random.randint(k_t1, (), lo1, hi1 + 1)
        t2 = jax.random.randint(k_t2, (), lo2, hi2 + 1)
        which = jax.random.randint(k_sym, (2,), 0, 2)  # 0 = X, 1 = Y
        tokens = tokens.at[t1].set(4 + which[0]).at[t2].set(4 + which[1])
        return jax.nn.one_hot(tokens, 8), 2 * which[0] + which[1]

    def loss(outputs: Array, target: Array) -> Array:
        return optax.softmax_cross_entropy_with_integer_labels(outputs[-1], target)

    def accuracy(outputs: Array, target: Array) -> Array:
        return (jnp.argmax(outputs[-1]) == target).astype(jnp.float32)

    return Task(
        "temporal_order",
        num_steps,
        8,
        4,
        sample,
        loss,
        accuracy,
        temporal_order_baseline(),
        num_steps - 1 - hi1,
    )


#: The synthetic tasks by name: ``TASKS[name](num_steps)`` makes a :class:`Task` (:func:`make_task`).
TASKS: dict[str, Callable[[int], Task]] = {
    "adding": adding_problem,
    "copy": copy_memory,
    "temporal_order": temporal_order,
}


# What sets each task's difficulty: the sequence length, or (copy) the blanks between the
# symbols and the recall signal.
SIZE_ARGUMENT: dict[str, str] = {
    "adding": "num_steps",
    "copy": "num_blanks",
    "temporal_order": "num_steps",
}


def make_task(name: str, *, num_steps: int | None = None, num_blanks: int | None = None) -> Task:
    """Returns the task called ``name``: ``make_task("adding", num_steps=100)``,
    ``make_task("copy", num_blanks=100)``, ``make_task("temporal_order", num_steps=100)``.

    Each task takes the one size argument named in :data:`SIZE_ARGUMENT`; giving the other
    raises ValueError.
    """
    if name not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {name!r}")
    given = {"num_steps": num_steps, "num_blanks": num_blanks}
    wanted = SIZE_ARGUMENT[name]
    other = "num_blanks" if wanted == "num_steps" else "num_steps"
    size = given[wanted]
    if size is None or given[other] is not None:
        raise ValueError(
            f"task {name!r} takes {wanted}= (and not {other}=), got num_steps={num_steps!r}, "
            f"num_blanks={num_blanks!r}"
        )
    return TASKS[name](size)


def sample_batch(task: Task, key: Array, batch_size: int) -> tuple[Array, Array]:
    """Returns ``(xs, targets)`` with ``xs: (batch_size, num_steps, input_size)``.

    Each example is ``task.sample`` of its own key from ``jax.random.split(key,
    batch_size)``, so a batch is a pure function of ``key``.
    """
    _check_int("batch_size", batch_size, 1)
    return jax.vmap(task.sample)(jax.random.split(key, batch_size))
