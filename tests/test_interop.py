"""from_torch: rnnjax reproduces torch.nn.RNN/LSTM/GRU, packed variable lengths included."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax

torch = pytest.importorskip("torch")

B, T, I, H = 3, 7, 4, 5


def torch_module(kind, **kwargs):
    torch.manual_seed(0)
    module = {"RNN": torch.nn.RNN, "LSTM": torch.nn.LSTM, "GRU": torch.nn.GRU}[kind](I, H, **kwargs)
    return module.eval()


def torch_final_states(kind, out_state, num_layers, bidirectional):
    """torch's h_n (and c_n) regrouped as rnnjax's per-layer carries, shape (B, ...)."""
    h_n, c_n = out_state if kind == "LSTM" else (out_state, None)
    d = 2 if bidirectional else 1
    finals = []
    for layer in range(num_layers):
        per_dir = []
        for direction in range(d):
            h = h_n[layer * d + direction].detach().numpy()
            per_dir.append(
                (h, c_n[layer * d + direction].detach().numpy()) if kind == "LSTM" else h
            )
        finals.append(tuple(per_dir) if bidirectional else per_dir[0])
    return finals


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
@pytest.mark.parametrize("num_layers,bidirectional", [(1, False), (2, True)])
@pytest.mark.parametrize("packed", [False, True])
def test_from_torch_matches_module(kind, num_layers, bidirectional, packed):
    module = torch_module(
        kind, num_layers=num_layers, bidirectional=bidirectional, batch_first=True
    )
    xs = np.random.default_rng(0).normal(size=(B, T, I)).astype(np.float32)
    lengths = np.array([7, 3, 1]) if packed else np.array([T] * B)
    x_t = torch.from_numpy(xs)
    with torch.no_grad():
        if packed:
            seq = torch.nn.utils.rnn.pack_padded_sequence(
                x_t, torch.from_numpy(lengths), batch_first=True, enforce_sorted=False
            )
            out, state = module(seq)
            out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=T)
        else:
            out, state = module(x_t)

    layer, params = rnnjax.interop.from_torch(module)
    apply = jax.jit(jax.vmap(lambda x, n: layer.apply(params, x, length=n)))
    finals, ys = apply(jnp.asarray(xs), jnp.asarray(lengths))
    np.testing.assert_allclose(ys, out.numpy(), atol=1e-5)
    want = torch_final_states(kind, state, num_layers, bidirectional)
    assert jax.tree.structure(finals) == jax.tree.structure(want)
    for a, b in zip(jax.tree.leaves(finals), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("options", [{"nonlinearity": "relu"}, {"bias": False}])
def test_from_torch_options(options):
    module = torch_module("RNN", **options)
    xs = np.random.default_rng(1).normal(size=(T, I)).astype(np.float32)
    with torch.no_grad():
        out, _ = module(torch.from_numpy(xs))  # unbatched (T, I) input
    layer, params = rnnjax.interop.from_torch(module)
    _, ys = layer.apply(params, jnp.asarray(xs))
    np.testing.assert_allclose(ys, out.numpy(), atol=1e-5)


def test_from_torch_rejects_what_it_cannot_convert():
    with pytest.raises(ValueError, match="proj_size"):
        rnnjax.interop.from_torch(torch.nn.LSTM(I, H, proj_size=2))
    with pytest.raises(TypeError, match="module"):
        rnnjax.interop.from_torch(torch.nn.Linear(I, H))


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_from_torch_keeps_float64_and_matches_torch_in_float64(kind):
    module = torch_module(kind, bidirectional=True, batch_first=True).double()
    xs = np.random.default_rng(2).normal(size=(B, T, I))  # float64
    lengths = np.array([7, 3, 1])
    with torch.no_grad():
        seq = torch.nn.utils.rnn.pack_padded_sequence(
            torch.from_numpy(xs), torch.from_numpy(lengths), batch_first=True, enforce_sorted=False
        )
        out, _ = module(seq)
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=T)
    with jax.enable_x64(True):
        layer, params = rnnjax.interop.from_torch(module)
        assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype("float64")}
        _, ys = jax.vmap(lambda x, n: layer.apply(params, x, length=n))(xs, lengths)
        assert ys.dtype == jnp.float64
        # float32 parameters would be ~1e-7 away
        np.testing.assert_allclose(ys, out.numpy(), rtol=0, atol=1e-12)


def test_from_torch_float64_without_x64_says_it_converts():
    module = torch_module("GRU").double()
    with pytest.warns(UserWarning, match="float64.*converted to float32.*jax_enable_x64"):
        _, params = rnnjax.interop.from_torch(module)
    assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype("float32")}
    np.testing.assert_array_equal(
        params[0]["w_hh"], module.weight_hh_l0.detach().numpy().T.astype(np.float32)
    )


def test_from_torch_keeps_bfloat16_exactly():
    module = torch_module("LSTM").to(torch.bfloat16)
    _, params = rnnjax.interop.from_torch(module)
    assert params[0]["w_ih"].dtype == jnp.bfloat16
    np.testing.assert_array_equal(
        np.asarray(params[0]["w_ih"], np.float32), module.weight_ih_l0.float().detach().numpy().T
    )
