"""Bad input raises a named error at trace time, with what was expected and what came."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax

cell = rnnjax.lstm(4)
params = cell.init(jax.random.key(0), 3)
xs = jnp.zeros((5, 3))


@pytest.mark.parametrize(
    "bad,match",
    [
        (jnp.zeros((2, 5, 3)), r"xs must have shape \(T, input_size\).*jax.vmap.*\(2, 5, 3\)"),
        (jnp.zeros((5,)), r"xs must have shape.*\(5,\)"),
        (jnp.zeros((5, 2)), r"xs has feature size 2.*input_size=3.*\(T, 3\).*\(5, 2\)"),
    ],
)
def test_wrong_input_shape(bad, match):
    with pytest.raises(ValueError, match=match):
        rnnjax.scan(cell, params, bad)
    with pytest.raises(ValueError, match=match):
        jax.jit(lambda x: rnnjax.recurrent(cell).apply(params, x))(bad)


@pytest.mark.parametrize("length", [-1, 6])
def test_length_out_of_range(length):
    with pytest.raises(ValueError, match=r"length must be in \[0, T=5\], got " + str(length)):
        rnnjax.scan(cell, params, xs, length=length)


def test_length_must_be_an_integer_scalar():
    with pytest.raises(ValueError, match="length must be a scalar"):
        rnnjax.scan(cell, params, xs, length=jnp.array([3, 4]))
    with pytest.raises(TypeError, match="length must be an integer"):
        rnnjax.scan(cell, params, xs, length=2.5)


def test_carry_mismatch():
    with pytest.raises(TypeError, match="carry has the wrong structure"):
        rnnjax.scan(cell, params, xs, carry=jnp.zeros(4))
    with pytest.raises(
        ValueError, match=r"carry has the wrong shapes.*\[\(4,\), \(4,\)\].*\[\(2, 4\), \(2, 4\)\]"
    ):
        rnnjax.scan(cell, params, xs, carry=(jnp.zeros((2, 4)), jnp.zeros((2, 4))))


def test_bad_configuration():
    with pytest.raises(ValueError, match=r"activation must be one of .* got 'sigmoid'"):
        rnnjax.elman(4, "sigmoid")
    with pytest.raises(ValueError, match=r"merge must be one of .* got 'max'"):
        rnnjax.bidirectional(cell, merge="max")
    with pytest.raises(ValueError, match="merge='sum' needs equal hidden sizes"):
        rnnjax.bidirectional(rnnjax.gru(3), rnnjax.gru(4), merge="sum")
    with pytest.raises(ValueError, match="hidden_size must be a positive int, got 0"):
        rnnjax.gru(0)
    with pytest.raises(ValueError, match="input_size must be a positive int, got -2"):
        cell.init(jax.random.key(0), -2)
    with pytest.raises(ValueError, match="dropout must be in"):
        rnnjax.stack(rnnjax.recurrent(cell), dropout=1.5)


# ------------------------------------------- parameters checked at apply, layers at construction

H = 4


def _apply_error(layer, params, x):
    """Returns the message of the ValueError that ``layer.apply`` raises, eagerly and under jit."""
    messages = []
    for run in (layer.apply, jax.jit(layer.apply)):
        with pytest.raises(ValueError) as info:
            run(params, x)
        messages.append(str(info.value))
    assert messages[0] == messages[1]
    return messages[0]


def test_params_of_another_cell_name_the_parameter_and_both_shapes():
    x = jnp.zeros((5, 3))
    gru_params = rnnjax.gru(H).init(jax.random.key(0), 3)
    message = _apply_error(rnnjax.recurrent(rnnjax.lstm(H)), gru_params, x)
    assert "params/b_hh must have shape (16,)" in message and "got (12,)" in message


def test_params_of_another_size_name_the_path_in_a_stack():
    x = jnp.zeros((5, 3))
    layer = rnnjax.stack(rnnjax.recurrent(rnnjax.gru(H)), rnnjax.bidirectional(rnnjax.lstm(H)))
    other = rnnjax.stack(rnnjax.recurrent(rnnjax.gru(H)), rnnjax.bidirectional(rnnjax.lstm(H + 1)))
    message = _apply_error(layer, other.init(jax.random.key(0), 3), x)
    assert "params/1/backward/b_hh must have shape (16,)" in message and "got (20,)" in message
    bidirectional = rnnjax.bidirectional(rnnjax.lstm(H))
    params = rnnjax.bidirectional(rnnjax.lstm(H), rnnjax.lstm(H + 1)).init(jax.random.key(0), 3)
    assert "params/backward/b_hh" in _apply_error(bidirectional, params, x)


def test_params_of_another_structure_name_the_missing_and_unexpected_keys():
    x = jnp.zeros((5, 3))
    bidirectional = rnnjax.bidirectional(rnnjax.lstm(H))
    message = _apply_error(bidirectional, rnnjax.lstm(H).init(jax.random.key(0), 3), x)
    assert "missing ['params/backward/b_hh'" in message and "unexpected ['params/b_hh'" in message


def test_params_cast_to_another_float_precision_still_run():
    layer = rnnjax.recurrent(rnnjax.lstm(H))
    params = jax.tree.map(lambda a: a.astype(jnp.bfloat16), layer.init(jax.random.key(0), 3))
    xs = jax.random.normal(jax.random.key(1), (5, 3))
    _, ys = layer.apply(params, xs)
    _, want = rnnjax.reference_scan(rnnjax.lstm(H), params, xs)
    # (the fast path and the reference round to bfloat16 in different places)
    np.testing.assert_allclose(np.asarray(ys, np.float32), np.asarray(want, np.float32), 2e-2, 2e-3)
    ints = jax.tree.map(lambda a: a.astype(jnp.int32), params)
    with pytest.raises(ValueError, match=r"params/b_hh must have dtype float32 \(or another"):
        layer.apply(ints, xs)


def test_an_eager_loop_traces_init_once_per_input_size():
    calls = []
    cell = rnnjax.lstm(H)
    counted = cell._replace(init=lambda key, n: calls.append(n) or cell.init(key, n))
    layer = rnnjax.recurrent(counted)
    params = cell.init(jax.random.key(0), 3)
    for _ in range(3):
        layer.apply(params, xs)
    assert calls == [3]  # one jax.eval_shape of init, for input size 3


def test_a_cell_where_a_layer_belongs_is_a_type_error_at_construction():
    with pytest.raises(TypeError, match=r"layer 0 of stack is a Cell.*wrap it in rnnjax.recurrent"):
        rnnjax.stack(rnnjax.gru(16))
    with pytest.raises(TypeError, match=r"layer 1 of stack must be a rnnjax.Layer, got int"):
        rnnjax.stack(rnnjax.recurrent(rnnjax.gru(16)), 3)
    with pytest.raises(TypeError, match=r"cell must be a rnnjax.Cell .* got Layer"):
        rnnjax.recurrent(rnnjax.recurrent(rnnjax.gru(16)))
    with pytest.raises(TypeError, match=r"backward_cell must be a rnnjax.Cell .* got Layer"):
        rnnjax.bidirectional(rnnjax.gru(16), rnnjax.recurrent(rnnjax.gru(16)))


def test_impl_that_the_cell_cannot_run_is_an_error_at_construction():
    with pytest.raises(ValueError, match="impl='fused' needs a cell whose step is a"):
        rnnjax.recurrent(rnnjax.gru(H, reset_after=False), impl="fused")
    with pytest.raises(ValueError, match="impl='parallel' needs a cell whose step is a"):
        rnnjax.bidirectional(rnnjax.lstm(H), impl="parallel")


def test_numpy_integers_are_ints_and_bools_are_not():
    layer = rnnjax.recurrent(rnnjax.lstm(np.int64(H)), remat=np.int64(2))
    params = layer.init(jax.random.key(0), np.int32(3))
    _, ys = layer.apply(params, xs)
    np.testing.assert_allclose(ys, rnnjax.reference_scan(rnnjax.lstm(H), params, xs)[1], 1e-6)
    assert rnnjax.tasks.adding_problem(np.int64(10)).num_steps == 10
    assert rnnjax.tasks.copy_memory(np.int64(3), num_symbols=np.int32(2)).num_steps > 3
    assert rnnjax.data.windows(np.arange(6.0), np.int64(3), np.int32(2)).shape == (2, 3)
    with pytest.raises(ValueError, match="length must be a positive integer, got True"):
        rnnjax.data.windows(np.arange(6.0), True)
