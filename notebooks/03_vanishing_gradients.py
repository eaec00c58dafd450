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
# # 03 · Vanishing gradients: vanilla RNN vs LSTM vs GRU on the adding problem
#
# **The task.** The adding problem (Hochreiter & Schmidhuber 1997; two-channel form of Le,
# Jaitly & Hinton 2015, `rnnjax.tasks.adding_problem`): $T$ values $\sim U[0, 1]$, two of them
# marked, one in each half; predict their sum at the last step. Always predicting 1 gives
# MSE $1/6$ without remembering anything, so a network has learned the long-range
# dependency only when its test MSE falls clearly below $1/6$. The first marked value sits,
# on average, $3T/4$ steps before the answer.
#
# **What backpropagation through time does.** The loss at the last step reaches the state
# at step $t$ through the product of step Jacobians between them (Pascanu, Mikolov & Bengio
# 2013),
# $\frac{dL}{dh_t} = \frac{\partial L}{\partial h_T}\prod_{s=t+1}^{T}\frac{\partial h_s}{\partial h_{s-1}}$.
# If that product shrinks geometrically, the gradient that would teach the network to store
# the first marked value is lost. `rnnjax.diagnostics.state_gradient_norms` measures
# $\|dL/dh_t\|$ for every $t$ in one backward pass.
#
# Set `RNNJAX_QUICK=1` to shrink every size (the test suite does).

# %%
import os

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

import rnnjax
from rnnjax import diagnostics, plots, readouts, tasks

QUICK = os.environ.get("RNNJAX_QUICK") == "1"
LENGTHS = [10] if QUICK else [10, 50, 100]
SEEDS = 2  # trained together as one vmapped program
H = 16 if QUICK else 32
BATCH = 32 if QUICK else 64
NUM_CHUNKS, CHUNK = (3, 10) if QUICK else (20, 75)  # gradients are probed after each chunk
NUM_STEPS = NUM_CHUNKS * CHUNK
CELLS = {
    "vanilla RNN (tanh)": lambda: rnnjax.elman(H),  # orthogonal W_hh
    "LSTM": lambda: rnnjax.lstm(H),  # forget-gate bias 1
    "GRU": lambda: rnnjax.gru(H),
}
COLORS = {"vanilla RNN (tanh)": "C0", "LSTM": "C1", "GRU": "C2"}
print(
    "JAX",
    jax.__version__,
    "on",
    jax.devices()[0].platform,
    f"| lengths {LENGTHS}, {SEEDS} seeds, {NUM_STEPS} Adam steps, hidden {H}",
)

# %% [markdown]
# ## The experiment, as one function
# For one cell and one length, `experiment` trains `SEEDS` networks (each with its own
# initialisation and data order) as ONE jitted, vmapped program: a recurrent cell read out by
# a linear map at every step (`rnnjax.scan`, `rnnjax.readouts.linear`), Adam with gradient
# clipping (`rnnjax.make_train_step`, `rnnjax.training.run_steps`). After every chunk of steps it
# probes $\|dL/dh_t\|$ on fixed test sequences, so the gradient flow is recorded *during*
# training at no extra compilation.

# %%
readout = readouts.linear(1)
optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-2))


def experiment(make_cell, length):
    """Returns a dict of (SEEDS, ...) arrays: losses, test MSE and gradient norms over training."""
    cell, task = make_cell(), tasks.adding_problem(length)
    test_xs, test_y = tasks.sample_batch(task, jax.random.key(10_000), 500)  # no run sees it
    probe_xs, probe_y = test_xs[:32], test_y[:32]

    def predict(params, xs):
        _, ys = rnnjax.scan(cell, params["cell"], xs)
        return readout.apply(params["readout"], ys)  # (T, 1)

    def loss_fn(params, batch, key):
        xs, y = batch
        return jnp.mean(jax.vmap(lambda x, t: task.loss(predict(params, x), t))(xs, y)), {}

    def test_mse(params):
        return loss_fn(params, (test_xs, test_y), None)[0]

    def grad_norms(params):
        """(T,): ||dL/dh_t|| averaged over the probe sequences (LSTM: h and c together)."""

        def one(x, y):
            loss = lambda carry, ys: task.loss(readout.apply(params["readout"], ys), y)
            return diagnostics.state_gradient_norms(cell, params["cell"], x, loss)

        return jnp.mean(jax.vmap(one)(probe_xs, probe_y), axis=0)

    train_step = rnnjax.make_train_step(loss_fn, optimizer)
    batch_fn = lambda key, step: tasks.sample_batch(task, key, BATCH)

    def run(seed):
        k_cell, k_out, k_data = jax.random.split(jax.random.key(seed), 3)
        params = {"cell": cell.init(k_cell, task.input_size), "readout": readout.init(k_out, H)}
        state = rnnjax.init_train_state(k_data, params, optimizer)

        def chunk(state, _):  # measure, then train; one copy of each in the program
            measured = (test_mse(state.params), grad_norms(state.params))
            state, metrics = rnnjax.training.run_steps(train_step, state, batch_fn, CHUNK)
            return state, (metrics["loss"], *measured)

        # NUM_CHUNKS + 1 measurements (step 0, CHUNK, ..., NUM_STEPS); the chunk trained after
        # the last measurement is dropped.
        _, (loss, mse, norms) = jax.lax.scan(chunk, state, None, length=NUM_CHUNKS + 1)
        return {"loss": loss[:-1].reshape(-1), "test_mse": mse, "grad_norms": norms}

    return jax.tree.map(np.asarray, jax.jit(jax.vmap(run))(jnp.arange(SEEDS)))


results = {(name, T): experiment(make, T) for T in LENGTHS for name, make in CELLS.items()}
for (name, T), r in results.items():
    print(
        f"T = {T:3d}  {name:18s}: test MSE {r['test_mse'][:, 0].mean():.4f} -> "
        f"{r['test_mse'][:, -1].mean():.4f} (seeds: {np.round(r['test_mse'][:, -1], 4)}); "
        f"||dL/dh_1|| / ||dL/dh_T|| at init = "
        f"{np.mean(r['grad_norms'][:, 0, 0] / r['grad_norms'][:, 0, -1]):.1e}"
    )

# %% [markdown]
# ## 1. At initialisation: how much of the loss reaches each step
# The gradient norm at step $t$ of the longest sequence, before any training, averaged over
# seeds and probe sequences. The last step receives the loss directly; every step back
# multiplies by one more step Jacobian.

# %%
T_max = LENGTHS[-1]
at_init = {name: results[(name, T_max)]["grad_norms"][:, 0].mean(axis=0) for name in CELLS}
fig = plots.gradient_norms(at_init, title=f"at initialisation, T = {T_max}")
plt.show()

# %% [markdown]
# Takeaway: before training, all three cells pass back a gradient that decays geometrically
# with distance from the last step; over 100 steps it loses about 3 orders of magnitude in
# the LSTM (forget-gate bias 1), about 7 in the vanilla RNN and about 12 in the GRU.

# %% [markdown]
# ## 2. Learning curves at each length
# Training loss (each step's fresh batch, smoothed over 25 steps, mean over seeds; the band
# spans the seeds) against the memoryless baseline $1/6$.


# %%
def smooth(a, k=25 if not QUICK else 5):
    return np.convolve(a, np.ones(k) / k, mode="valid")


fig, axes = plt.subplots(
    1, len(LENGTHS), figsize=(4 * len(LENGTHS), 3.2), squeeze=False, sharey=True
)
for ax, T in zip(axes[0], LENGTHS):
    for name in CELLS:
        curves = np.stack([smooth(c) for c in results[(name, T)]["loss"]])
        steps = np.arange(curves.shape[1])
        ax.plot(steps, curves.mean(axis=0), color=COLORS[name], label=name)
        ax.fill_between(
            steps, curves.min(axis=0), curves.max(axis=0), color=COLORS[name], alpha=0.2
        )
    ax.axhline(1 / 6, color="k", linestyle="--", linewidth=0.8, label="predict 1 (MSE 1/6)")
    ax.set_yscale("log")
    ax.set_title(f"T = {T}")
    ax.set_xlabel("training step")
axes[0, 0].set_ylabel("training MSE")
axes[0, 0].legend(frameon=False, fontsize=7)
fig.tight_layout()
plt.show()

# %% [markdown]
# Takeaway: at T = 10 all three cells go far below 1/6 (vanilla RNN to about $2\cdot10^{-3}$,
# LSTM and GRU to about $10^{-4}$); at T = 50 and 100 the vanilla RNN never leaves the 1/6
# baseline in 1500 steps, while the GRU leaves it within about 100 steps and the LSTM after a
# plateau of about 200–300 steps.

# %% [markdown]
# ## 3. Final test error against sequence length

# %%
fig, ax = plt.subplots(figsize=(5, 3.2))
for name in CELLS:
    final = np.array([results[(name, T)]["test_mse"][:, -1] for T in LENGTHS])  # (len, seeds)
    ax.plot(LENGTHS, final.mean(axis=1), "o-", color=COLORS[name], label=name)
    for T, f in zip(LENGTHS, final):
        ax.scatter([T] * len(f), f, color=COLORS[name], s=8, alpha=0.5)
ax.axhline(1 / 6, color="k", linestyle="--", linewidth=0.8, label="predict 1")
ax.set_yscale("log")
ax.set_xlabel("sequence length T")
ax.set_ylabel(f"test MSE after {NUM_STEPS} steps")
ax.legend(frameon=False, fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# Takeaway: the vanilla RNN solves T = 10 (test MSE about 0.002) but stays at the baseline
# (about 0.17) at T = 50 and 100; LSTM and GRU end between $10^{-4}$ and about $5\cdot10^{-4}$
# at every length.

# %% [markdown]
# ## 4. Gradient flow during training
# $\log_{10}\|dL/dh_t\|$ over time step (x) and training step (y), first seed, longest
# sequence (`rnnjax.plots.gradient_heatmap`).

# %%
fig, axes = plt.subplots(1, len(CELLS), figsize=(5 * len(CELLS), 3.4))
train_steps = np.arange(NUM_CHUNKS + 1) * CHUNK
for ax, name in zip(axes, CELLS):
    plots.gradient_heatmap(
        results[(name, T_max)]["grad_norms"][0],
        train_steps=train_steps,
        ax=ax,
        title=f"{name}, T = {T_max}",
    )
plt.show()

# %% [markdown]
# Takeaway: the gated cells repair their own gradient flow — within the first ~100 (GRU) and
# ~250 (LSTM) steps, when their loss leaves the baseline, $\|dL/dh_t\|$ becomes nearly uniform
# over all 100 steps — while the vanilla RNN's keeps vanishing across the sequence
# throughout (white: it underflowed to 0).

# %% [markdown]
# ## 5. Before and after training
# The same gradient norms at initialisation and after the last step (mean over seeds).

# %%
fig, axes = plt.subplots(1, len(CELLS), figsize=(5 * len(CELLS), 3.2), sharey=True)
for ax, name in zip(axes, CELLS):
    norms = results[(name, T_max)]["grad_norms"].mean(axis=0)
    plots.gradient_norms(
        {"at initialisation": norms[0], f"after {NUM_STEPS} steps": norms[-1]}, ax=ax, title=name
    )
plt.show()

# %% [markdown]
# Takeaway: after training, LSTM and GRU deliver about as much gradient to step 1 as to
# step 100, while the vanilla RNN's gradient at the first steps has fallen further, below
# $10^{-20}$: the gated cells learned to carry information across the sequence, the vanilla
# RNN did not.
