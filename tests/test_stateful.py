"""Stateful training (rnnjax.training.stateful): truncated BPTT against a Python loop over cell.step."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rnnjax
from rnnjax import training
from rnnjax._src import language_models
from rnnjax._src.training import stateful

V, H = 6, 5
CELL = rnnjax.gru(H)
LM = rnnjax.language_model(rnnjax.recurrent(CELL), V, embed_size=3)


def _nll_by_loop(params, tokens, carry=None, cut=None):
    """Returns (per-step NLL list, final carry): the GRU stepped by hand; the gradient stops at ``cut``."""
    h = CELL.initial_carry(params["rnn"]) if carry is None else carry
    nll = []
    for t in range(len(tokens) - 1):
        if t == cut:
            h = jax.lax.stop_gradient(h)
        h, y = CELL.step(params["rnn"], h, params["embed"]["table"][tokens[t]])
        logits = y @ params["readout"]["w"] + params["readout"]["b"]
        nll.append(-jax.nn.log_softmax(logits)[tokens[t + 1]])
    return nll, h


_INITIAL = jax.tree.map(
    lambda a: a[None], CELL.initial_carry(LM.init(jax.random.PRNGKey(0))["rnn"])
)
_SGD = optax.sgd(1.0)
# One stream, one jitted step: compiled once per chunk length.
_STEP = jax.jit(training.make_stateful_train_step(language_models.chunk_loss(LM), _SGD, _INITIAL))


def _gradient_of_step(params, chunks, num_steps):
    """Returns (gradient at params of step ``num_steps - 1``, its metrics, the state after it).

    Every step is SGD with learning rate 1 from ``params`` (put back after each step, so only
    the carry moves on): the update is minus the gradient.
    """
    state = training.init_stateful_train_state(jax.random.PRNGKey(0), params, _SGD, _INITIAL)
    for s in range(num_steps):
        state, metrics = _STEP(state._replace(params=params), training.chunk_at(chunks, s))
    grad = jax.tree.map(lambda a, b: a - b, params, state.params)
    return grad, metrics, state


def test_document_chunks_by_hand():
    docs = [np.array([1, 2, 3, 4, 5]), np.array([6, 7, 8]), np.array([9])]
    one = training.document_chunks(docs, num_streams=1, chunk_length=2, pad_token=0)
    np.testing.assert_array_equal(one.inputs[:, 0], [[1, 2], [3, 4], [6, 7]])
    np.testing.assert_array_equal(one.targets[:, 0], [[2, 3], [4, 5], [7, 8]])
    np.testing.assert_array_equal(one.lengths[:, 0], [2, 2, 2])
    np.testing.assert_array_equal(one.reset[:, 0], [True, False, True])
    two = training.document_chunks(docs, num_streams=2, chunk_length=3, pad_token=0)
    # three chunks (doc 1 in 2, doc 2 in 1), two per stream: the second stream ends empty
    np.testing.assert_array_equal(two.inputs[:, 0], [[1, 2, 3], [4, 0, 0]])
    np.testing.assert_array_equal(two.targets[:, 0], [[2, 3, 4], [5, 0, 0]])
    np.testing.assert_array_equal(two.inputs[:, 1], [[6, 7, 0], [0, 0, 0]])
    np.testing.assert_array_equal(two.lengths, [[3, 2], [1, 0]])
    np.testing.assert_array_equal(two.reset, [[True, True], [False, True]])
    assert training.chunk_at(two, 3).lengths.tolist() == [1, 0]  # step 3 = chunk 1
    # six chunks of one step in three streams: stream 1 starts inside document 1, reset
    three = training.document_chunks(docs, num_streams=3, chunk_length=1)
    np.testing.assert_array_equal(three.inputs[:, :, 0].T, [[1, 2], [3, 4], [6, 7]])
    np.testing.assert_array_equal(three.targets[:, :, 0].T, [[2, 3], [4, 5], [7, 8]])
    np.testing.assert_array_equal(three.reset.T, [[True, False]] * 3)


def test_truncation_at_the_whole_sequence_is_full_bptt():
    params = LM.init(jax.random.PRNGKey(1))
    tokens = np.array([1, 4, 2, 2, 5], np.int32)
    chunks = training.document_chunks([tokens], num_streams=1, chunk_length=len(tokens) - 1)
    grad, metrics, _ = _gradient_of_step(params, chunks, 1)
    expected = jax.grad(lambda p: jnp.mean(jnp.stack(_nll_by_loop(p, tokens)[0])))(params)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), grad, expected
    )
    assert float(metrics["loss"]) == pytest.approx(
        float(jnp.mean(jnp.stack(_nll_by_loop(params, tokens)[0]))), rel=1e-5
    )


def test_the_carry_crosses_chunks_and_the_gradient_stops_at_the_boundary():
    params = LM.init(jax.random.PRNGKey(2))
    tokens = np.array([1, 4, 2, 2, 5, 0, 3, 1, 4], np.int32)  # 8 pairs: chunks of 4 and 4
    chunks = training.document_chunks([tokens], num_streams=1, chunk_length=4)
    grad, metrics, state = _gradient_of_step(params, chunks, 2)
    nll = lambda p: jnp.mean(jnp.stack(_nll_by_loop(p, tokens, cut=4)[0][4:]))
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
        grad,
        jax.grad(nll)(params),
    )
    assert float(metrics["loss"]) == pytest.approx(float(nll(params)), rel=1e-5)
    # the carry kept in the state is the carry after the whole text
    _, h_end = _nll_by_loop(params, tokens)
    np.testing.assert_allclose(state.opt_state.carry[0], h_end, atol=1e-5)


def test_a_new_document_starts_from_the_initial_carry():
    params = LM.init(jax.random.PRNGKey(3))
    first, second = np.array([1, 2, 3, 4, 5], np.int32), np.array([5, 0, 2, 1], np.int32)
    chunks = training.document_chunks([first, second], num_streams=1, chunk_length=4)
    assert chunks.reset[:, 0].tolist() == [True, True]
    grad, metrics, _ = _gradient_of_step(params, chunks, 2)
    nll = lambda p: jnp.mean(jnp.stack(_nll_by_loop(p, second)[0]))
    assert float(metrics["loss"]) == pytest.approx(float(nll(params)), rel=1e-5)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
        grad,
        jax.grad(nll)(params),
    )


def test_fit_carries_the_state_and_streams_learn():
    params = LM.init(jax.random.PRNGKey(4))
    docs = [np.tile(np.array([1, 2, 3, 4, 5], np.int32), 8)] * 2  # a periodic text, two documents
    chunks = training.document_chunks(docs, num_streams=2, chunk_length=8)
    device_chunks = jax.tree.map(jnp.asarray, chunks)
    initial = jax.vmap(lambda _: LM.initial_carry(params))(jnp.arange(2))
    opt = optax.adam(3e-2)
    state = training.init_stateful_train_state(jax.random.PRNGKey(0), params, opt, initial)
    step = training.make_stateful_train_step(language_models.chunk_loss(LM), opt, initial)
    result = training.fit(
        step,
        state,
        lambda key, s: training.chunk_at(device_chunks, s),
        60,
        schedule=training.Schedule(20),
        progress=False,
    )
    first, last = result.history[0]["loss"], result.history[-1]["loss"]
    assert first > 1.5 and last < 0.2  # ln 6 = 1.79 at chance; the cycle is learnt
    assert isinstance(result.state.opt_state, stateful.CarriedState)
    with pytest.raises(TypeError, match="init_stateful_train_state"):
        step(
            training.init_train_state(jax.random.PRNGKey(0), params, opt),
            training.chunk_at(chunks, 0),
        )
