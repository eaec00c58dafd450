"""rnnjax.language_models.carry_bridge: a conditioning vector sets a language model's carry."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax
from rnnjax import decoding
from rnnjax.language_models import carry_bridge

# An LSTM under a GRU: the carry has three leaves of two sizes, ((h, c), h).
LM = rnnjax.language_model(
    rnnjax.stack(rnnjax.recurrent(rnnjax.lstm(3)), rnnjax.recurrent(rnnjax.gru(2))), 5, embed_size=4
)


def test_bridge_by_hand_through_a_hidden_layer():
    bridge = carry_bridge(LM, (6,))
    params = bridge.init(jax.random.PRNGKey(0), 4)
    x = np.array([0.5, -1.0, 2.0, 0.25], np.float32)
    carry = bridge.apply(params, jnp.asarray(x))
    w1, b1 = (np.asarray(params[0][k], np.float64) for k in ("w", "b"))
    w2, b2 = (np.asarray(params[1][k], np.float64) for k in ("w", "b"))
    assert w1.shape == (4, 6) and w2.shape == (6, 3 + 3 + 2)
    out = np.tanh(np.maximum(x @ w1 + b1, 0.0) @ w2 + b2)
    (h1, c1), h2 = carry
    np.testing.assert_allclose(h1, out[0:3], rtol=1e-5)
    np.testing.assert_allclose(c1, out[3:6], rtol=1e-5)
    np.testing.assert_allclose(h2, out[6:8], rtol=1e-5)
    zeros = LM.initial_carry(LM.init(jax.random.PRNGKey(1)))
    assert jax.tree.structure(carry) == jax.tree.structure(zeros)
    with pytest.raises(ValueError, match=r"x must have shape \(input_size,\).*vmap.*\(2, 4\)"):
        bridge.apply(params, jnp.ones((2, 4)))


def test_conditioned_model_decodes_from_the_bridged_carry():
    bridge = carry_bridge(LM)
    b_params = bridge.init(jax.random.PRNGKey(2), 3)
    params = LM.init(jax.random.PRNGKey(3))
    params["readout"]["w"] = 3.0 * params["readout"]["w"]  # spread the logits out
    carry = bridge.apply(b_params, jnp.array([1.0, -2.0, 0.5]))
    # without hidden layers each leaf is tanh of its own affine map
    (h1, _), _ = carry
    np.testing.assert_allclose(
        h1,
        np.tanh(
            np.array([1.0, -2.0, 0.5]) @ np.asarray(b_params[0]["w"])[:, :3]
            + np.asarray(b_params[0]["b"])[:3]
        ),
        rtol=1e-5,
    )
    tokens = jnp.array([0, 3, 1, 4, 2])
    _, logits = LM.apply(params, tokens, carry=carry)
    c, expected = carry, []  # a Python loop over one-token steps from the same carry
    for t in tokens:
        c, step_logits = LM.step(params, c, t)
        expected.append(step_logits)
    np.testing.assert_allclose(logits, np.stack(expected), rtol=1e-5, atol=1e-6)
    # a beam of one is the greedy generation from that carry; the carry matters
    greedy, _ = LM.generate(params, jnp.array([0]), max_length=7, carry=carry)
    beam, _, _ = decoding.beam_search(
        lambda c, t: LM.step(params, c, t), carry, 0, beam_size=1, max_length=6
    )
    np.testing.assert_array_equal(greedy[1:], beam[0])
    other = bridge.apply(b_params, jnp.array([-1.0, 2.0, -0.5]))
    assert not np.allclose(
        LM.step(params, carry, jnp.array(0))[1], LM.step(params, other, jnp.array(0))[1]
    )
