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
# # 05 · Training at scale: the Optax loop, checkpoints, many seeds, several devices
#
# A training run in rnnjax is a pure function of a key and a config (as in purejaxrl):
# `make_train_step` is one `value_and_grad` and one Optax update, `run_steps` scans it on
# device, and `fit` is the host loop around it (run directory, checkpoints, resume, eval,
# hooks). Because the data of step `s` is a function of `(seed, s)` alone, a resumed run is
# bitwise the uninterrupted one, `jax.vmap` trains many seeds as ONE program, and the same
# call runs data-parallel over several devices.
#
# **Simulated devices.** To show data parallelism on a laptop we ask XLA for 4 CPU devices.
# That flag is read once, when JAX initialises its backend, so it must be set **before**
# `import jax` — here, in the first cell. (On a machine with several GPUs, leave it out:
# `jax.devices()` lists them.) Every `fit` below uses all 4 devices by default; section 5
# compares that with one device.
#
# Set `RNNJAX_QUICK=1` to shrink every size (the test suite does).

# %%
import os

if "jax" in __import__("sys").modules:
    print("warning: jax was imported before this cell; restart the kernel for 4 devices")
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
).strip()

import dataclasses
import tempfile
import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

import rnnjax
from rnnjax import checkpoints, readouts, tasks, training

QUICK = os.environ.get("RNNJAX_QUICK") == "1"
print("JAX", jax.__version__, "|", jax.device_count(), "devices:", jax.devices())

# %% [markdown]
# ## The run: a config, data, a model, a loss
# The adding problem (`rnnjax.tasks.adding_problem`): predict the sum of the two marked
# values in a sequence of $T$ random numbers; predicting 1 always gives MSE 1/6, so only a
# model that remembers the marked values across the sequence goes below it. The model is an
# LSTM read out at its last step (`rnnjax.many_to_one`).


# %%
@dataclasses.dataclass(frozen=True)
class Config:
    seed: int = 0
    length: int = 20 if QUICK else 50
    hidden: int = 16 if QUICK else 32
    batch_size: int = 32 if QUICK else 64  # divisible by the 4 devices
    lr: float = 1e-2
    clip: float = 1.0
    num_steps: int = 60 if QUICK else 1000


config = Config()
task = tasks.adding_problem(config.length)
model = rnnjax.many_to_one(rnnjax.recurrent(rnnjax.lstm(config.hidden)), readouts.linear(1))


def loss_fn(params, batch, key):
    """Returns (MSE of the last-step prediction, {}); ``key`` is unused (no dropout)."""
    xs, target = batch
    prediction = jax.vmap(lambda x: model.apply(params, x))(xs)[:, 0]
    return jnp.mean(jnp.square(prediction - target)), {}


def batch_fn(key, step):
    """Returns a fresh batch, a pure function of the key that (seed, step) determines."""
    return tasks.sample_batch(task, key, config.batch_size)


test_batch = tasks.sample_batch(task, jax.random.key(10_000), 500 if QUICK else 2000)


def eval_fn(params, key):
    return {"mse": loss_fn(params, test_batch, key)[0]}


optimizer = optax.chain(
    optax.clip_by_global_norm(config.clip),  # Pascanu et al. (2013)
    optax.inject_hyperparams(optax.adam)(learning_rate=config.lr),
)
train_step = training.make_train_step(loss_fn, optimizer)


def init_state(seed, lr=config.lr):
    """Returns the TrainState of one run: its parameters, optimizer state and data key."""
    k_params, k_data = jax.random.split(jax.random.key(seed))
    state = training.init_train_state(k_data, model.init(k_params, task.input_size), optimizer)
    opt_state = optax.tree_utils.tree_set(
        state.opt_state, learning_rate=jnp.asarray(lr, jnp.float32)
    )
    return state._replace(opt_state=opt_state)


print(f"adding problem, T = {config.length}; baseline MSE = {task.baseline_loss:.4f}")

# %% [markdown]
# ## 1. The loop on device: `run_steps`
# `run_steps(train_step, state, batch_fn, n)` is `n` updates in one `lax.scan` — one XLA
# program, no Python between steps. Its metrics come back stacked to `(n,)`.

# %%
run = jax.jit(training.run_steps, static_argnums=(0, 2, 3))
state = init_state(config.seed)
t0 = time.perf_counter()
state_after, metrics = run(train_step, state, batch_fn, config.num_steps)
jax.block_until_ready(metrics)
print(
    f"{config.num_steps} steps in {time.perf_counter() - t0:.1f} s (compilation included); "
    f"metrics: {sorted(metrics)}"
)
test_mse = jax.jit(lambda params: eval_fn(params, None)["mse"])
print(f"test MSE: {float(test_mse(state.params)):.4f} -> {float(test_mse(state_after.params)):.4f}")

fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
ax[0].plot(metrics["loss"], linewidth=0.8)
ax[0].axhline(task.baseline_loss, color="k", linestyle="--", linewidth=0.8, label="predict 1")
ax[0].set_yscale("log")
ax[0].set_xlabel("training step")
ax[0].set_ylabel("training MSE (batch)")
ax[0].legend(frameon=False)
ax[1].plot(metrics["grad_norm"], linewidth=0.8)
ax[1].axhline(config.clip, color="k", linestyle="--", linewidth=0.8, label="clip threshold")
ax[1].set_yscale("log")
ax[1].set_xlabel("training step")
ax[1].set_ylabel("gradient norm (before clipping)")
ax[1].legend(frameon=False)
fig.tight_layout()
plt.show()

# %% [markdown]
# Takeaway: the loss sits at the 1/6 baseline for about 150 steps, then falls to about
# $10^{-3}$ by step 400 (test MSE 0.58 → 0.0005 after 1000 steps); the escape from the
# plateau comes with gradient norms up to about 8, which clipping at 1 keeps from blowing up
# the updates.

# %% [markdown]
# ## 2. `fit`: a run directory, evaluation, checkpoints
# `fit` runs chunks of `run_steps` and, between them, evaluates, calls hooks, writes
# `metrics.jsonl` and saves orbax checkpoints; the config is saved beside them so the run can
# be reproduced from its directory alone.

# %%
root = tempfile.mkdtemp(prefix="rnnjax-05-")
chunk = config.num_steps // 10
schedule = training.Schedule(
    chunk_size=chunk, eval_every=chunk, checkpoint_every=2 * chunk, keep_checkpoints=2
)
result = training.fit(
    train_step,
    init_state(config.seed),
    batch_fn,
    config.num_steps,
    run_dir=os.path.join(root, "full"),
    config=config,
    eval_fn=eval_fn,
    schedule=schedule,
    progress=False,
)
print("files:", sorted(os.listdir(os.path.join(root, "full"))))
print("checkpoints kept:", checkpoints.checkpoint_steps(os.path.join(root, "full", "checkpoints")))
print("config read back:", training.load_config(os.path.join(root, "full"), Config) == config)
history = training.read_metrics(os.path.join(root, "full"))
print(
    "a row of metrics.jsonl:",
    {k: round(v, 4) if isinstance(v, float) else v for k, v in history[-2].items()},
)

train_rows = [r for r in history if "loss" in r]
eval_rows = [r for r in history if "eval/mse" in r]
fig, ax = plt.subplots(figsize=(5.5, 3.2))
ax.plot(
    [r["step"] for r in train_rows],
    [r["loss"] for r in train_rows],
    linewidth=0.6,
    alpha=0.6,
    label="training batch",
)
ax.plot(
    [r["step"] for r in eval_rows],
    [r["eval/mse"] for r in eval_rows],
    "o-",
    label="held-out test set",
)
ax.axhline(task.baseline_loss, color="k", linestyle="--", linewidth=0.8, label="predict 1")
ax.set_yscale("log")
ax.set_xlabel("training step")
ax.set_ylabel("MSE")
ax.legend(frameon=False)
fig.tight_layout()
plt.show()

# %% [markdown]
# Takeaway: the held-out test MSE, evaluated every 100 steps, follows the training loss
# down from the baseline to about $5\cdot10^{-4}$: no overfitting, since every batch is fresh.

# %% [markdown]
# ## 3. Interrupt and resume: bitwise the same run
# We train the same config for half the steps (as if the job were killed after its last
# checkpoint), then call `fit` again on the same directory with the full `num_steps`: it
# restores the latest checkpoint and continues. The data of each step depends only on
# `(seed, step)`, so the result equals the uninterrupted run exactly.

# %%
resumed_dir = os.path.join(root, "resumed")
half = training.fit(
    train_step,
    init_state(config.seed),
    batch_fn,
    config.num_steps // 2,
    run_dir=resumed_dir,
    config=config,
    schedule=training.Schedule(chunk),
    progress=False,
)
print(
    "stopped at step",
    int(half.state.step),
    "; checkpoints:",
    checkpoints.checkpoint_steps(os.path.join(resumed_dir, "checkpoints")),
)
resumed = training.fit(
    train_step,
    init_state(config.seed),
    batch_fn,
    config.num_steps,
    run_dir=resumed_dir,
    config=config,
    schedule=training.Schedule(chunk),
    progress=False,
)
same = jax.tree.map(
    lambda a, b: bool(jnp.array_equal(a, b)), result.state.params, resumed.state.params
)
print(
    "resumed run's parameters bitwise equal to the uninterrupted run's:", all(jax.tree.leaves(same))
)
losses_full = [r["loss"] for r in result.history if "loss" in r]
losses_resumed = [r["loss"] for r in training.read_metrics(resumed_dir) if "loss" in r]
print("training losses equal at every step:", losses_full == losses_resumed)

# %% [markdown]
# ## 4. Many seeds — and learning rates — as one program
# `run_steps` is a pure function of the state, so `jax.vmap` over a batch of states trains
# them all in one compiled program. Each run has its own initialisation, data order and,
# through `optax.inject_hyperparams`, its own learning rate. `fit` accepts such a batched
# state directly (its `step` has shape `(N,)`), and every metric then holds N values.

# %%
seeds = [0, 1] if QUICK else [0, 1, 2]
lrs = [3e-3, 1e-2] if QUICK else [1e-3, 3e-3, 1e-2, 3e-2]
grid_seed, grid_lr = np.meshgrid(seeds, lrs, indexing="ij")
states = jax.vmap(init_state)(
    jnp.asarray(grid_seed.ravel()), jnp.asarray(grid_lr.ravel(), jnp.float32)
)
print("runs:", grid_seed.size, "| step counter shape:", states.step.shape)

t0 = time.perf_counter()
sweep = training.fit(
    train_step,
    states,
    batch_fn,
    config.num_steps,
    eval_fn=eval_fn,
    schedule=training.Schedule(chunk),
    progress=False,
)
t_sweep = time.perf_counter() - t0
final_mse = np.asarray([r for r in sweep.history if "eval/mse" in r][-1]["eval/mse"])
final_mse = final_mse.reshape(grid_seed.shape)
print(
    f"{grid_seed.size} runs x {config.num_steps} steps as one program: {t_sweep:.1f} s "
    f"(compilation included)"
)

fig, ax = plt.subplots(figsize=(5, 3.2))
for i, seed in enumerate(seeds):
    ax.plot(lrs, final_mse[i], "o-", alpha=0.7, label=f"seed {seed}")
ax.axhline(task.baseline_loss, color="k", linestyle="--", linewidth=0.8, label="predict 1")
ax.set_xscale("log")
ax.set_yscale("log")
ax.set_xlabel("Adam learning rate")
ax.set_ylabel(f"test MSE after {config.num_steps} steps")
ax.legend(frameon=False, fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# Takeaway: all 12 runs end far below the baseline; larger learning rates (up to $3\cdot10^{-2}$)
# mostly end lower after 1000 steps — $10^{-3}$ leaves the test MSE around $10^{-2}$ — and the spread
# between seeds is as large as a factor 2–4 at a fixed learning rate.

# %% [markdown]
# The vmapped runs are the same runs as when trained one by one, up to float rounding
# (batching changes the order of some sums). Training amplifies rounding differences, so we
# compare the training losses step by step:

# %%
k = grid_seed.size - 1
one = training.fit(
    train_step,
    init_state(int(grid_seed.ravel()[k]), float(grid_lr.ravel()[k])),
    batch_fn,
    config.num_steps,
    schedule=training.Schedule(chunk),
    progress=False,
)
alone = np.array([r["loss"] for r in one.history if "loss" in r])
together = np.array([r["loss"][k] for r in sweep.history if "loss" in r])
gap = np.abs(alone - together)
print(
    f"run {k} (seed {grid_seed.ravel()[k]}, lr {grid_lr.ravel()[k]}): |loss vmapped - alone| "
    f"max over the first 10 steps {gap[:10].max():.1e}, over all steps {gap.max():.1e}"
)

# %% [markdown]
# ## 5. Data parallelism over devices
# `fit(..., mesh=mesh)` replicates the state on every device of a 1-D mesh with axis
# `"data"` and splits each batch along its leading axis; XLA inserts the all-reduce of the
# gradients. The default mesh is all devices; here we compare it with a mesh of one device.
# Same seed, same batches, same result up to the order of floating-point sums.

# %%
mesh4 = training.data_parallel_mesh()
mesh1 = training.data_parallel_mesh(jax.devices()[:1])
batch = training.shard_batch(batch_fn(jax.random.key(0), 0), mesh4)
print(
    "a batch on the 4-device mesh:",
    batch[0].shape,
    "->",
    [s.data.shape for s in batch[0].addressable_shards],
)

runs = {}
for name, mesh in [("1 device", mesh1), ("4 devices", mesh4)]:
    out = training.fit(
        train_step,
        init_state(config.seed),
        batch_fn,
        config.num_steps,
        schedule=training.Schedule(chunk),
        mesh=mesh,
        progress=False,
    )
    runs[name] = np.array([r["loss"] for r in out.history if "loss" in r])
    print(
        f"{name}: parameters live on {len(jax.tree.leaves(out.state.params)[0].devices())} "
        f"device(s); final training loss {runs[name][-1]:.5f}"
    )
gap = np.abs(runs["1 device"] - runs["4 devices"])
print(
    f"|loss(1 device) - loss(4 devices)|: step 0: {gap[0]:.1e}, first 10 steps: "
    f"max {gap[:10].max():.1e}, all {gap.size} steps: max {gap.max():.1e}"
)

fig, ax = plt.subplots(figsize=(5.5, 3.2))
ax.plot(gap, linewidth=0.8)
ax.set_yscale("log")
ax.set_xlabel("training step")
ax.set_ylabel("|loss on 1 device − loss on 4|")
fig.tight_layout()
plt.show()

# %% [markdown]
# Takeaway: the 1- and 4-device losses agree to about $10^{-8}$ (float rounding) until step
# ~150, where the run escapes the plateau with large gradients: there the rounding difference
# is amplified and the two runs become different (equally good) runs, ending at training losses
# 0.00043 and 0.00034.
#
# We do not time it: the 4 simulated devices share the same CPU cores, so they show that the
# same call, unchanged, spreads the batch over devices — not a speed-up. On several hosts,
# call `jax.distributed.initialize()` first and the mesh spans them all (see
# `docs/training.md`).
