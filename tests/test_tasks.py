"""Tasks: structure of sampled sequences (checked with NumPy) and baselines against closed forms."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnjax._src import tasks


def _batch(task, n, seed=0):
    xs, ys = tasks.sample_batch(task, jax.random.PRNGKey(seed), n)
    return np.asarray(xs), np.asarray(ys)


def test_adding_structure_and_target():
    task = tasks.adding_problem(11)
    xs, ys = _batch(task, 500)
    assert xs.shape == (500, 11, 2) and ys.shape == (500,)
    values, markers = xs[..., 0], xs[..., 1]
    assert ((values >= 0) & (values < 1)).all()
    assert (markers.sum(axis=1) == 2).all()
    half = 11 // 2
    assert (markers[:, :half].sum(axis=1) == 1).all()  # one marker in each half
    assert (markers[:, half:].sum(axis=1) == 1).all()
    np.testing.assert_allclose(ys, (values * markers).sum(axis=1), rtol=1e-6)
    # every position of each half is used
    assert (markers.sum(axis=0) > 0).all()


def test_adding_baseline_is_one_sixth_on_samples():
    task = tasks.adding_problem(6)
    assert task.baseline_loss == pytest.approx(1 / 6)
    xs, ys = _batch(task, 40_000, seed=1)
    # the constant-1 predictor, scored by the task's own loss and by NumPy
    outputs = jnp.ones((xs.shape[0], xs.shape[1], 1))
    task_mse = float(jnp.mean(jax.vmap(task.loss)(outputs, jnp.asarray(ys))))
    np.testing.assert_allclose(task_mse, np.mean((ys - 1.0) ** 2), rtol=1e-5)
    # Var(u + v) = 1/6; the SE of the mean squared error at n = 40k is about 0.001
    assert abs(task_mse - 1 / 6) < 0.005
    # and no constant does better: the best constant is the sample mean, close to 1
    assert abs(ys.mean() - 1.0) < 0.01


def test_adding_loss_reads_only_last_output():
    task = tasks.adding_problem(5)
    outputs = jnp.zeros((5, 1)).at[-1, 0].set(0.25).at[0, 0].set(100.0)
    assert float(task.loss(outputs, jnp.asarray(1.0))) == pytest.approx(0.75**2)


def test_copy_structure():
    blanks = 7
    task = tasks.copy_memory(blanks)
    assert task.num_steps == blanks + 20 and task.input_size == 10 and task.output_size == 9
    xs, ys = _batch(task, 300)
    assert xs.shape == (300, 27, 10) and ys.shape == (300, 27)
    np.testing.assert_array_equal(xs.sum(axis=-1), 1.0)  # one-hot
    tokens = xs.argmax(-1)
    symbols = tokens[:, :10]
    assert ((symbols >= 1) & (symbols <= 8)).all()
    assert set(np.unique(symbols)) == set(range(1, 9))
    np.testing.assert_array_equal(tokens[:, 10 : 10 + blanks - 1], 0)
    np.testing.assert_array_equal(tokens[:, 10 + blanks - 1], 9)  # the delimiter
    np.testing.assert_array_equal(tokens[:, 10 + blanks :], 0)
    np.testing.assert_array_equal(ys[:, : blanks + 10], 0)
    np.testing.assert_array_equal(ys[:, blanks + 10 :], symbols)


@pytest.mark.parametrize("blanks", [1, 30])
def test_copy_memoryless_baseline_closed_form(blanks):
    task = tasks.copy_memory(blanks)
    expected = 10 * math.log(8) / (blanks + 20)
    assert task.baseline_loss == pytest.approx(expected)
    _xs, ys = _batch(task, 64, seed=2)
    # blank with certainty for T + 10 steps, uniform over the 8 symbols for the last 10
    t = task.num_steps
    big = 1e4
    logits = np.full((t, 9), -big, np.float32)
    logits[: blanks + 10, 0] = big
    logits[blanks + 10 :, 1:] = 0.0
    losses = jax.vmap(task.loss, in_axes=(None, 0))(jnp.asarray(logits), jnp.asarray(ys))
    np.testing.assert_allclose(np.asarray(losses), expected, rtol=1e-5)


def test_copy_accuracy_on_recalled_symbols():
    task = tasks.copy_memory(5)
    _xs, ys = _batch(task, 8, seed=3)
    perfect = jax.nn.one_hot(jnp.asarray(ys), 9) * 10.0
    acc = jax.vmap(task.accuracy)(perfect, jnp.asarray(ys))
    np.testing.assert_array_equal(np.asarray(acc), 1.0)
    # perfect on the blanks, wrong on every symbol: accuracy counts only the 10 symbols
    blanks_only = jax.nn.one_hot(jnp.zeros_like(jnp.asarray(ys)), 9)
    np.testing.assert_array_equal(
        np.asarray(jax.vmap(task.accuracy)(blanks_only, jnp.asarray(ys))), 0.0
    )


def test_temporal_order_structure_and_baseline():
    T = 40
    task = tasks.temporal_order(T)
    xs, ys = _batch(task, 4000, seed=4)
    tokens = xs.argmax(-1)
    assert (tokens[:, 0] == 6).all() and (tokens[:, -1] == 7).all()
    relevant = (tokens == 4) | (tokens == 5)
    assert (relevant.sum(axis=1) == 2).all()
    pos = np.sort(np.nonzero(relevant)[1].reshape(-1, 2), axis=1)
    assert ((pos[:, 0] >= 4) & (pos[:, 0] <= 8)).all()  # [0.1T, 0.2T]
    assert ((pos[:, 1] >= 20) & (pos[:, 1] <= 24)).all()  # [0.5T, 0.6T]
    first = tokens[np.arange(len(tokens)), pos[:, 0]] - 4
    second = tokens[np.arange(len(tokens)), pos[:, 1]] - 4
    np.testing.assert_array_equal(ys, 2 * first + second)
    # classes balanced, so the uniform guess (cross-entropy ln 4) is the memoryless optimum
    np.testing.assert_allclose(np.bincount(ys, minlength=4) / len(ys), 0.25, atol=0.03)
    uniform = jnp.zeros((T, 4))
    loss = float(task.loss(uniform, jnp.asarray(ys[0])))
    assert loss == pytest.approx(math.log(4)) == pytest.approx(task.baseline_loss)


def test_sampling_is_a_pure_function_of_the_key():
    task = tasks.adding_problem(8)
    a = tasks.sample_batch(task, jax.random.PRNGKey(5), 4)
    b = tasks.sample_batch(task, jax.random.PRNGKey(5), 4)
    c = tasks.sample_batch(task, jax.random.PRNGKey(6), 4)
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], c[0])


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="num_steps"):
        tasks.adding_problem(1)
    with pytest.raises(ValueError, match="num_blanks"):
        tasks.copy_memory(0)
    with pytest.raises(ValueError, match="task must be one of"):
        tasks.make_task("parity", num_steps=10)
    with pytest.raises(ValueError, match="batch_size"):
        tasks.sample_batch(tasks.adding_problem(4), jax.random.PRNGKey(0), 0)
    assert tasks.make_task("copy", num_blanks=3).baseline_loss == pytest.approx(
        tasks.copy_baseline(3)
    )
    assert tasks.make_task("adding", num_steps=7).num_steps == 7
    with pytest.raises(ValueError, match=r"task 'copy' takes num_blanks= \(and not num_steps=\)"):
        tasks.make_task("copy", num_steps=3)
