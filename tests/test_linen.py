"""flax.linen wrappers: params are the pure tree, outputs and gradients equal the pure functions'."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import rnnjax
from rnnjax import readouts
from rnnjax._src import linen as rl

KEY = jax.random.PRNGKey(0)
XS = jax.random.normal(jax.random.PRNGKey(1), (3, 5, 2))
LENGTHS = jnp.array([5, 2, 0])


def _same_structure(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    assert [x.shape for x in jax.tree.leaves(a)] == [x.shape for x in jax.tree.leaves(b)]


def _assert_tree_close(a, b):
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6), a, b)


def test_rnn_params_are_the_pure_tree_and_outputs_and_grads_match():
    layer = rnnjax.bidirectional(rnnjax.lstm(4))
    module = rl.RNN(layer, return_carry=True)
    variables = module.init(KEY, XS)
    pure = layer.init(jax.random.PRNGKey(2), 2)
    _same_structure(variables["params"], pure)
    assert set(variables) == {"params"}

    # run the module on a pure init, and the pure layer by vmap
    def module_loss(p):
        final, ys = module.apply({"params": p}, XS, seq_lengths=LENGTHS)
        return jnp.sum(ys**2) + sum(jnp.sum(c) for c in jax.tree.leaves(final))

    def pure_loss(p):
        final, ys = jax.vmap(lambda x, n: layer.apply(p, x, length=n))(XS, LENGTHS)
        return jnp.sum(ys**2) + sum(jnp.sum(c) for c in jax.tree.leaves(final))

    module_vg = jax.jit(jax.value_and_grad(module_loss))
    pure_vg = jax.jit(jax.value_and_grad(pure_loss))
    (l_module, g_module), (l_pure, g_pure) = module_vg(pure), pure_vg(pure)
    np.testing.assert_allclose(l_module, l_pure, rtol=1e-6)
    _assert_tree_close(g_module, g_pure)


def test_rnn_stack_keeps_its_list_under_layers_and_converts_both_ways():
    layer = rnnjax.stack(rnnjax.recurrent(rnnjax.gru(3)), rnnjax.recurrent(rnnjax.elman(3)))
    module = rl.RNN(layer)
    variables = module.init(KEY, XS)
    assert set(variables["params"]) == {"layers"}
    pure = rl.to_pure(variables["params"])
    _same_structure(pure, layer.init(KEY, 2))
    ys_pure = jax.vmap(lambda x: layer.apply(pure, x)[1])(XS)
    np.testing.assert_allclose(module.apply({"params": rl.from_pure(pure)}, XS), ys_pure, rtol=1e-6)
    assert rl.to_pure(rl.from_pure({"w": 1})) == {"w": 1}


def test_cell_runs_inside_flax_rnn_and_matches_pure_scan():
    cell = rnnjax.gru(4)
    flax_rnn = nn.RNN(rl.RNNCell(cell))
    variables = flax_rnn.init(KEY, XS)
    _same_structure(variables["params"]["cell"], cell.init(KEY, 2))
    ys = flax_rnn.apply(variables, XS, seq_lengths=LENGTHS)
    p = variables["params"]["cell"]
    ys_pure = jax.vmap(lambda x, n: rnnjax.reference_scan(cell, p, x, length=n)[1])(XS, LENGTHS)
    valid = (jnp.arange(5)[None] < LENGTHS[:, None])[..., None]
    # flax.linen.RNN leaves padded outputs unspecified; compare the valid steps
    np.testing.assert_allclose(jnp.where(valid, ys, 0), ys_pure, rtol=1e-5, atol=1e-6)
    carry = rl.RNNCell(cell).initialize_carry(KEY, (3, 2))
    assert carry.shape == (3, 4)


def test_wrappers_inside_a_users_module_match_the_pure_model_with_gradients():
    class Classifier(nn.Module):
        @nn.compact
        def __call__(self, xs, lengths):
            ys = rl.RNN(rnnjax.bidirectional(rnnjax.gru(4)), name="encoder")(xs, lengths)
            pooled = jnp.sum(ys, axis=1) / jnp.maximum(lengths, 1)[:, None]
            return rl.Readout(readouts.linear(3), name="head")(nn.tanh(pooled))

    net = Classifier()
    variables = net.init(KEY, XS, LENGTHS)
    layer, head = rnnjax.bidirectional(rnnjax.gru(4)), readouts.linear(3)
    _same_structure(variables["params"]["encoder"], layer.init(KEY, 2))
    _same_structure(variables["params"]["head"], head.init(KEY, 8))
    model = rnnjax.many_to_one(layer, head, pool="mean")

    def pure_out(p):
        # the same network as the pure many_to_one with mean pooling, up to the tanh
        def one(x, n):
            _, ys = layer.apply(p["encoder"], x, length=n)
            return head.apply(p["head"], jnp.tanh(jnp.sum(ys, 0) / jnp.maximum(n, 1)))

        return jax.vmap(one)(XS, LENGTHS)

    p = variables["params"]
    np.testing.assert_allclose(net.apply(variables, XS, LENGTHS), pure_out(p), rtol=1e-5, atol=1e-6)
    g_module = jax.jit(jax.grad(lambda q: jnp.sum(net.apply({"params": q}, XS, LENGTHS) ** 2)))(p)
    g_pure = jax.jit(jax.grad(lambda q: jnp.sum(pure_out(q) ** 2)))(p)
    _assert_tree_close(g_module, g_pure)
    # and the pure model's params drop straight into the Model wrapper
    model_params = {"rnn": p["encoder"], "readout": p["head"]}
    out = rl.Model(model).apply({"params": model_params}, XS, LENGTHS)
    expected = jax.vmap(lambda x, n: model.apply(model_params, x, length=n))(XS, LENGTHS)
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_model_embed_and_mlp_wrappers_match_pure():
    model = rnnjax.one_to_one(readouts.mlp([4], 2))
    x = jax.random.normal(KEY, (6, 3))
    variables = rl.Model(model, example_ndim=1).init(KEY, x)
    pure = rl.to_pure(variables["params"])
    _same_structure(pure, model.init(KEY, 3))
    np.testing.assert_allclose(
        rl.Model(model, example_ndim=1).apply(variables, x),
        jax.vmap(lambda u: model.apply(pure, u))(x),
        rtol=1e-6,
    )
    emb = readouts.embedding(5, 2)
    tokens = jnp.array([[1, 4], [0, 0]])
    variables = rl.Embed(emb).init(KEY, tokens)
    assert set(variables["params"]) == {"table"}
    np.testing.assert_allclose(
        rl.Embed(emb).apply(variables, tokens),
        np.asarray(variables["params"]["table"])[np.asarray(tokens)],
    )


def test_dropout_uses_the_dropout_rng_only_when_training():
    layer = rnnjax.stack(
        rnnjax.recurrent(rnnjax.gru(3)), rnnjax.recurrent(rnnjax.gru(3)), dropout=0.5
    )
    module = rl.RNN(layer)
    variables = module.init(KEY, XS)
    pure = rl.to_pure(variables["params"])
    eval_out = module.apply(variables, XS)
    np.testing.assert_allclose(eval_out, jax.vmap(lambda x: layer.apply(pure, x)[1])(XS), rtol=1e-6)
    a = module.apply(variables, XS, train=True, rngs={"dropout": jax.random.PRNGKey(5)})
    b = module.apply(variables, XS, train=True, rngs={"dropout": jax.random.PRNGKey(6)})
    assert not np.allclose(a, eval_out) and not np.allclose(a, b)


# ---------------------------------------------------------------------------- flax.nnx


def test_nnx_rnn_params_outputs_and_grads_equal_pure_inside_a_users_module():
    from flax import nnx

    from rnnjax._src import nnx as rnx

    layer, head = rnnjax.bidirectional(rnnjax.gru(3)), readouts.linear(2)

    class Tagger(nnx.Module):
        def __init__(self, rngs):
            self.rnn = rnx.RNN(layer, 2, rngs=rngs)
            self.head = rnx.Readout(head, 6, rngs=rngs)

        def __call__(self, xs, lengths):
            return self.head(self.rnn(xs, lengths))

    net = Tagger(nnx.Rngs(0))
    p_rnn, p_head = net.rnn.pure_params(), net.head.pure_params()
    _same_structure(p_rnn, layer.init(KEY, 2))
    _same_structure(p_head, head.init(KEY, 6))

    def pure_loss(p_rnn, p_head):
        ys = jax.vmap(lambda x, n: layer.apply(p_rnn, x, length=n)[1])(XS, LENGTHS)
        return jnp.sum(head.apply(p_head, ys) ** 2)

    @nnx.jit
    def nnx_value_and_grad(net):
        return nnx.value_and_grad(lambda m: jnp.sum(m(XS, LENGTHS) ** 2))(net)

    loss, grads = nnx_value_and_grad(net)
    ref_loss, (g_rnn, g_head) = jax.jit(jax.value_and_grad(pure_loss, argnums=(0, 1)))(
        p_rnn, p_head
    )
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
    grads = grads.to_pure_dict()
    _assert_tree_close(grads["rnn"]["params"], g_rnn)
    _assert_tree_close(grads["head"]["params"], g_head)

    # load_pure round-trips a pure tree
    new = layer.init(jax.random.PRNGKey(9), 2)
    net.rnn.load_pure(new)
    _assert_tree_close(net.rnn.pure_params(), new)
    cell = rnx.RNNCell(rnnjax.lstm(4), 2, rngs=nnx.Rngs(1))
    carry, y = cell(cell.initial_carry((3,)), XS[:, 0])
    ref = jax.vmap(
        lambda x: rnnjax.lstm(4).step(
            cell.pure_params(), rnnjax.lstm(4).initial_carry(cell.pure_params()), x
        )
    )(XS[:, 0])
    _assert_tree_close((carry, y), ref)


def test_a_cell_where_a_layer_is_needed_raises_type_error():
    import pytest
    from flax import nnx

    from rnnjax._src import nnx as rnx

    with pytest.raises(TypeError, match=r"rnnjax.recurrent"):
        rl.RNN(rnnjax.gru(3)).init(KEY, XS)
    with pytest.raises(TypeError, match=r"rnnjax.recurrent"):
        rnx.RNN(rnnjax.gru(3), 2, rngs=nnx.Rngs(0))


def test_gradient_flow_labels_keep_linen_and_nnx_module_names():
    # Two layers as submodules; the reference places each loop's probes by hand
    # (tests/test_gradient_flow.py) on the same parameters.
    from flax import nnx
    from test_gradient_flow import bidirectional as probed_bidirectional
    from test_gradient_flow import by_leaf, direction

    from rnnjax import diagnostics as dg
    from rnnjax._src import nnx as rnx

    h, x, n = 3, XS[1], 4
    lstm, gru = rnnjax.lstm(h), rnnjax.gru(h)
    w = jnp.cos(jnp.arange(5 * 2 * h)).reshape(5, 2 * h)

    class Linen(nn.Module):  # bidirectional LSTMs: RNN_0/forward/h, ..., top/backward/c
        @nn.compact
        def __call__(self, x, n):
            layer = rnnjax.bidirectional(lstm)
            return rl.RNN(layer, name="top")(rl.RNN(layer)(x, n), n)

    def linen_by_hand(params, probes):
        _, ys = probed_bidirectional(lstm, params["RNN_0"], x, probes, n, "RNN_0")
        _, ys = probed_bidirectional(lstm, params["top"], ys, probes, n, "top")
        return jnp.sum(w * jnp.sin(ys))

    module = Linen()
    variables = jax.jit(module.init)(KEY, x, n)
    loss = lambda v, x: jnp.sum(w * jnp.sin(module.apply(v, x, n)))
    got = jax.jit(lambda v, x: dg.gradient_flow(loss, v, x))(variables, x)
    zeros = {
        f"{m}/{d}": jnp.zeros((5, 2 * h)) for m in ("RNN_0", "top") for d in ("forward", "backward")
    }
    want = by_leaf(jax.jit(jax.grad(linen_by_hand, argnums=1))(variables["params"], zeros))
    assert set(got) == set(want)
    assert len(want) == 8 and {k.split("/")[0] for k in want} == {"RNN_0", "top"}
    for label in want:
        np.testing.assert_allclose(got[label], want[label], rtol=1e-4, atol=1e-6, err_msg=label)

    class Nnx(nnx.Module):  # GRU layers held as self.bottom and self.top
        def __init__(self, rngs):
            self.bottom = rnx.RNN(rnnjax.recurrent(gru), 2, rngs=rngs)
            self.top = rnx.RNN(rnnjax.recurrent(gru), h, rngs=rngs)

        def __call__(self, x, n):
            return self.top(self.bottom(x, n), n)

    def nnx_by_hand(bottom, top, probes):
        _, ys = direction(gru, bottom, x, probes["bottom"], n, False)
        _, ys = direction(gru, top, ys, probes["top"], n, False)
        return jnp.sum(w[:, :h] * jnp.sin(ys))

    net = Nnx(nnx.Rngs(0))
    # the module is an argument of the loss, where its submodules' names are read off
    nnx_loss = lambda m, x: jnp.sum(w[:, :h] * jnp.sin(m(x, n)))
    got = jax.jit(lambda x: dg.gradient_flow(nnx_loss, net, x))(x)
    zeros = {"bottom": jnp.zeros((5, h)), "top": jnp.zeros((5, h))}
    want = jax.grad(nnx_by_hand, argnums=2)(net.bottom.pure_params(), net.top.pure_params(), zeros)
    assert set(got) == set(want) == {"bottom", "top"}
    for label in want:
        np.testing.assert_allclose(got[label], want[label], rtol=1e-4, atol=1e-6, err_msg=label)
