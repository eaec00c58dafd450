# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · Quickstart: cells, `rnnjax.scan`, lengths, batching, layers
#
# rnnjax writes recurrent networks as **pure functions over plain pytrees**. A *cell* is a
# small record of functions (`init`, `initial_carry`, `step`) for ONE example and ONE time
# step; `rnnjax.scan` is the time loop; `jax.vmap` is batching; *layers* compose cells.
#
# Set `RNNJAX_QUICK=1` to shrink every size (the test suite does).

# %%
import os

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import rnnjax

QUICK = os.environ.get("RNNJAX_QUICK") == "1"
T = 40 if QUICK else 200
print("JAX", jax.__version__, "on", jax.devices()[0].platform)

# %% [markdown]
# ## A cell is data
# `rnnjax.lstm(H)` returns a `Cell`. Its parameters are a dict laid out for `x @ W`, with the
# four gate blocks in PyTorch's order (i, f, g, o) and both biases; the forget-gate block of
# `b_ih` starts at 1 (Jozefowicz et al. 2015).

# %%
cell = rnnjax.lstm(16)
params = cell.init(jax.random.key(0), input_size=3)
print({k: v.shape for k, v in params.items()})
print("forget-gate bias:", params["b_ih"][16:32][:4], "...")

carry = cell.initial_carry(params)  # (h, c), zeros
carry, y = cell.step(params, carry, jnp.ones(3))  # one step, one example
print("y:", y.shape)

# %% [markdown]
# ## The time loop, and sequences of different lengths
# `rnnjax.scan(cell, params, xs, length=n)` runs `cell.step` over one sequence `xs: (T, I)`.
# Steps `t >= n` leave the carry unchanged and emit zeros, so the final carry is the carry after
# the last valid step whatever the padding holds.

# %%
key = jax.random.key(1)
xs = jax.random.normal(key, (T, 3))
final, ys = rnnjax.scan(cell, params, xs, length=T // 2)
padded = xs.at[T // 2 :].set(100.0)  # garbage in the padding ...
final2, ys2 = rnnjax.scan(cell, params, padded, length=T // 2)
print("padding changes nothing:", bool(jnp.all(ys == ys2)), bool(jnp.all(final[0] == final2[0])))

# %% [markdown]
# ## Batching is `jax.vmap`, with one length per example

# %%
batch = jax.random.normal(key, (8, T, 3))
lengths = jnp.linspace(T // 8, T, 8).astype(jnp.int32)
run = jax.jit(jax.vmap(lambda x, n: rnnjax.scan(cell, params, x, length=n)))
finals, ys = run(batch, lengths)
print("ys:", ys.shape, " final h:", finals[0].shape)

fig, ax = plt.subplots(figsize=(6, 2.8))
ax.imshow(np.abs(np.asarray(ys[:, :, 0])), aspect="auto", cmap="viridis")
ax.plot(np.asarray(lengths) - 0.5, np.arange(8), "w|", markersize=14)
ax.set_xlabel("time step t")
ax.set_ylabel("example in batch")
ax.set_title("|h_t[0]| for a padded batch (white: length)")
fig.tight_layout()

# %% [markdown]
# Takeaway: each row stops at its own length (white marks); the padding emits exact zeros.

# %% [markdown]
# ## Layers: reverse, bidirectional, stacked
# A bidirectional layer reads the valid prefix back to front in its backward direction and puts
# the outputs back in input order, so `ys[t]` always belongs to `xs[t]`. When both directions
# use the same kind of cell, they run as ONE scan vmapped over a direction axis.

# %%
model = rnnjax.stack(
    rnnjax.bidirectional(rnnjax.gru(32)),  # 3 -> 64 (concat)
    rnnjax.recurrent(rnnjax.lstm(32)),  # 64 -> 32
    dropout=0.1,
)
mparams = model.init(jax.random.key(2), 3)
apply = jax.jit(jax.vmap(lambda x, n: model.apply(mparams, x, length=n)))
finals, ys = apply(batch, lengths)
print("stacked bidirectional output:", ys.shape)
print("parameter count:", sum(a.size for a in jax.tree.leaves(mparams)))

# %% [markdown]
# ## From PyTorch, exactly
# The equations are PyTorch's, so a `torch.nn.LSTM` converts by transposing its weights.

# %%
try:
    import torch
except ImportError:
    torch = None
if torch is not None:
    torch.manual_seed(0)
    module = torch.nn.LSTM(3, 16, num_layers=2, bidirectional=True, batch_first=True).eval()
    layer, tparams = rnnjax.interop.from_torch(module)
    with torch.no_grad():
        out, _ = module(torch.from_numpy(np.array(batch)))
    _, ours = jax.vmap(lambda x: layer.apply(tparams, x))(batch)
    print("max |rnnjax - torch| =", float(np.abs(np.asarray(ours) - out.numpy()).max()))
