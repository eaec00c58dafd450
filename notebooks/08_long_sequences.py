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
# # 08 · Long sequences: parallel in time
#
# A recurrence $h_t = f(h_{t-1}, x_t)$ is evaluated one step after another: step $t$ waits
# for step $t-1$, so $T$ steps take $T$ sequential operations however wide the machine.
# Two answers from the last few years, both in `rnnjax`:
#
# 1. **Cells linear in their state** — the LRU (Orvieto et al. 2023) and minGRU / minLSTM
#    (Feng et al. 2024): $h_t = a_t \odot h_{t-1} + b_t$ with $(a_t, b_t)$ read from $x_t$
#    alone. The maps $h \mapsto a h + b$ compose associatively, so
#    `jax.lax.associative_scan` gives every $h_t$ in $O(\log T)$ depth (Blelloch 1990).
# 2. **Any cell by Newton's method over the whole trajectory** — DEER (Lim et al. 2024):
#    linearise $f$ around a guessed trajectory, solve the linear recurrence
#    $s_t = J_t s_{t-1} + c_t$ by one associative scan, repeat. quasi-DEER keeps only the
#    diagonal of $J_t$; ELK (Gonzalez et al. 2024) damps each update (Levenberg–Marquardt,
#    as a Kalman filter) so that it cannot blow up on chaotic cells.
#
# This notebook checks that both give the sequential scan's values, shows how Newton
# converges (and where undamped Newton does not), measures the time on this machine, and
# asks whether linear recurrences let the gradient reach the first step.
#
# Set `RNNJAX_QUICK=1` to shrink every size (the test suite does).

# %%
import math
import os
import sys

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import rnnjax
from rnnjax import diagnostics, parallel_in_time, readouts, tasks

sys.path.insert(0, os.path.abspath(os.path.join(os.getcwd(), os.pardir)))
from experiments import benchmark_parallel, vanishing_gradients

QUICK = os.environ.get("RNNJAX_QUICK") == "1"
T = 200 if QUICK else 1000  # sequence length of the value checks and the Newton runs
T_CHAOS = 300  # the chaotic Elman (ELK needs more iterations as T grows)
H = 8  # hidden units of the Newton runs (the benchmark's H)
T_TIME = 200 if QUICK else 1000  # sequence length of the timings
REPS = 2 if QUICK else 3
print("JAX", jax.__version__, "on", jax.devices()[0].platform, f"| T = {T}, H = {H}")

# %% [markdown]
# ## 1. The LRU, minGRU and minLSTM: one associative scan equals the step-by-step loop
#
# Each cell is a record of pure functions like `rnnjax.gru`; its `step` is a
# `rnnjax.LinearStep(coefficients, output)`. `rnnjax.scan` runs that step in `lax.scan` (the
# reference); `impl="parallel"` computes the coefficients of all steps at once and the
# states with one associative scan over them — the same two functions, so an edited cell
# cannot be silently replaced. `rnnjax.scan_path` says which loop runs. The LRU's state is complex
# (Λ = diag(exp(−exp(ν) + i exp(θ))), initialised on the ring $0.9 \le |λ| \le 0.999$ with
# phases up to π/10, the paper's long-range setting); minGRU and minLSTM scan in log space.

# %%
xs = jax.random.normal(jax.random.key(0), (T, 4))
linear_cells = {
    "LRU": rnnjax.lru(16, 0.9, 0.999, math.pi / 10),
    "minGRU": rnnjax.mingru(16),
    "minLSTM": rnnjax.minlstm(16),
}
LENGTH = T - 37  # a padded tail: the states stop at the last valid step
traj = {}
for name, cell in linear_cells.items():
    params = cell.init(jax.random.key(1), 4)

    def loss(params, impl):
        _, ys = rnnjax.recurrent(cell, impl=impl).apply(params, xs, length=LENGTH)
        return jnp.sum(jnp.sin(ys)), ys

    value_and_grad = jax.jit(jax.value_and_grad(loss, has_aux=True), static_argnums=1)
    (_, ys_par), g_par = value_and_grad(params, "parallel")
    _, g_seq = value_and_grad(params, "reference")
    _, ys_scan = rnnjax.scan(cell, params, xs, length=LENGTH)
    grad_err = max(
        float(jnp.max(jnp.abs(a - b)) / (1e-6 + jnp.max(jnp.abs(b))))
        for a, b in zip(jax.tree.leaves(g_par), jax.tree.leaves(g_seq))
    )
    print(
        f"{name:8s} path {rnnjax.scan_path(cell, 'parallel')!r:11s} "
        f"max |ys parallel - rnnjax.scan| = {float(jnp.max(jnp.abs(ys_par - ys_scan))):.1e}; "
        f"gradients: largest relative difference {grad_err:.1e}"
    )
    traj[name] = (np.asarray(ys_scan), np.asarray(ys_par))

# %%
fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
lru_params = linear_cells["LRU"].init(jax.random.key(1), 4)
lam = np.exp(-np.exp(lru_params["nu_log"]) + 1j * np.exp(lru_params["theta_log"]))
circle = np.exp(1j * np.linspace(0, np.pi / 2, 200))
axes[0].plot(circle.real, circle.imag, "k", lw=0.8)
axes[0].plot(0.9 * circle.real, 0.9 * circle.imag, "k:", lw=0.8)
axes[0].scatter(lam.real, lam.imag, s=12, color="tab:purple")
axes[0].set(
    xlim=(0.8, 1.02),
    ylim=(-0.02, 0.35),
    aspect="equal",
    xlabel="Re λ",
    ylabel="Im λ",
    title="LRU eigenvalues at init (ring 0.9-0.999)",
)
for ax, name in zip(axes[1:], ("LRU", "minGRU")):
    seq, par = traj[name]
    for j, color in zip(range(3), ("C0", "C1", "C2")):
        ax.plot(seq[:, j], color=color, lw=2.5, alpha=0.35)
        ax.plot(par[:, j], color=color, lw=0.8, ls="--")
    ax.axvline(LENGTH, color="gray", lw=0.8, ls=":")
    ax.set(title=f"{name}: rnnjax.scan (thick) vs associative scan (dashed)", xlabel="t")
axes[1].set_ylabel("output units 0-2")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 2. DEER, quasi-DEER and ELK on a GRU
#
# `parallel_in_time.evaluate(cell, params, xs, method=...)` returns the trajectory and a
# `Report`: the Newton updates taken, the final residual
# $\max_t |s_t - f(s_{t-1}, x_t)| / (1 + |f(s_{t-1}, x_t)|)$, whether it converged
# (residual ≤ 1e-5 in float32), whether it fell back to the sequential scan, and the
# residual of every iterate. We compare a GRU at initialisation with the same GRU after a
# short training run on the adding problem (`benchmark_parallel.trained_gru`: Adam, T = 50),
# on adding-problem inputs of length T.

# %%
config = benchmark_parallel.Config(
    train_steps=50 if QUICK else 300, lengths=(T,), hidden_sizes=(H,), reps=REPS
)
gru, untrained, trained, train_loss = benchmark_parallel.trained_gru(config, H, jax.random.key(3))
print(
    f"GRU H={H} trained {config.train_steps} steps on the adding problem (T={config.train_length}): "
    f"final training loss {train_loss:.4f} (baseline 1/6 = 0.1667)"
)
task = tasks.adding_problem(T)
adding_xs, _ = tasks.sample_batch(task, jax.random.key(4), 1)
adding_xs = adding_xs[0]


@jax.jit
def newton_runs(params, xs):
    """Returns (sequential ys, {method: (ys, report)}) for one sequence."""
    want = rnnjax.scan(gru, params, xs)[1]
    return want, {
        m: parallel_in_time.evaluate(gru, params, xs, method=m, max_iter=100)[1:]
        for m in parallel_in_time.METHODS
    }


gru_runs = {
    label: newton_runs(p, adding_xs)
    for label, p in (("untrained", untrained), ("trained", trained))
}
for label, (want, got) in gru_runs.items():
    for method, (ys, report) in got.items():
        print(
            f"{label:9s} {method:10s} iterations {int(report.iterations):3d}  residual "
            f"{float(report.residual):.1e}  converged {bool(report.converged)}  fell back "
            f"{bool(report.fell_back)}  max |ys - sequential| {np.max(np.abs(np.asarray(ys - want))):.1e}"
        )

# %%
fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
want, got = gru_runs["trained"]
window = slice(0, min(T, 200))
for j, color in zip(range(3), ("C0", "C1", "C2")):
    axes[0].plot(np.asarray(want)[window, j], color=color, lw=3, alpha=0.3)
    axes[0].plot(np.asarray(got["quasi-deer"][0])[window, j], color=color, lw=0.8, ls="--")
axes[0].set(
    title="trained GRU: sequential (thick) vs quasi-DEER (dashed)",
    xlabel="t",
    ylabel="h_t, units 0-2",
)
for ax, label in zip(axes[1:], ("untrained", "trained")):
    for method, color in zip(parallel_in_time.METHODS, ("C3", "C0", "C2")):
        r = np.asarray(gru_runs[label][1][method][1].residuals)
        ax.semilogy(np.arange(len(r)), r, "o-", ms=3, color=color, label=method)
    ax.axhline(1e-5, color="gray", ls=":", lw=1, label="tol 1e-5")
    ax.set(
        title=f"{label} GRU, T = {T}: residual per Newton iterate",
        xlabel="Newton updates",
        xlim=(-1, 45),
    )
axes[1].set_ylabel("residual")
axes[1].legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# DEER (dense Jacobians) converges quadratically once near the answer; quasi-DEER drops the
# off-diagonal Jacobian entries and needs several times more updates; ELK damps each update,
# which costs iterations on a well-behaved cell — on the trained GRU, with its default
# damping 1/4, it may not reach the tolerance within `max_iter = 100` and falls back (the
# report says so). The iteration counts are what the parallel evaluation pays for: each
# update is a full associative scan over the sequence.
#
# ## 3. Where undamped Newton fails: an Elman network, ordinary and chaotic
#
# An Elman network with recurrent weights of gain 3 ($W_{hh} \sim \mathcal N(0, 9/H)$) is
# chaotic (Sompolinsky, Crisanti & Sommers 1988): nearby trajectories separate, and the
# linear recurrences of undamped Newton multiply Jacobians of norm ≈ 3 until they
# overflow. `evaluate` then reports non-convergence and (the default `on_failure="fallback"`)
# returns the sequential scan's trajectory, flagged; ELK's damped recurrence has
# coefficients of modulus ≤ 1 and cannot overflow, but it can converge slowly. Which
# method gets there depends on the draw: on the test suite's chaotic Elman (T = 300) DEER
# and quasi-DEER fail and ELK converges; on this one (T = 300, below) DEER overflows,
# quasi-DEER converges in 244 updates and ELK had not after 300 (residual 2.6e-2), so it
# fell back, correctly flagged. Beside it, the same Elman at its default initialisation
# (orthogonal $W_{hh}$, gain 1) and T = 1000.

# %%
elman = rnnjax.elman(H)
elman_params = elman.init(jax.random.key(5), 2)
chaotic = {**elman_params, "w_hh": 3.0 * jax.random.normal(jax.random.key(6), (H, H)) / np.sqrt(H)}
elman_xs = jax.random.normal(jax.random.key(7), (T, 2))
chaos_xs = jax.random.normal(jax.random.key(7), (T_CHAOS, 2))


@jax.jit
def elman_runs(params, xs):
    want = rnnjax.scan(elman, params, xs)[1]
    return want, {
        m: parallel_in_time.evaluate(elman, params, xs, method=m, max_iter=300)[1:]
        for m in parallel_in_time.METHODS
    }


elman_results = {
    "default init (gain 1)": elman_runs(elman_params, elman_xs),
    "chaotic (gain 3)": elman_runs(chaotic, chaos_xs),
}
for label, (want, got) in elman_results.items():
    for method, (ys, report) in got.items():
        print(
            f"{label:22s} {method:10s} iterations {int(report.iterations):3d}  residual "
            f"{float(report.residual):.1e}  converged {bool(report.converged)}  fell back "
            f"{bool(report.fell_back)}  max |ys - sequential| {np.max(np.abs(np.asarray(ys - want))):.1e}"
        )

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), sharey=True)
for ax, (label, (_, got)) in zip(axes, elman_results.items()):
    for method, color in zip(parallel_in_time.METHODS, ("C3", "C0", "C2")):
        r = np.asarray(got[method][1].residuals)
        r = np.where(np.isfinite(r), r, np.nan)
        ax.semilogy(np.arange(len(r)), r, "-", color=color, label=method)
    ax.axhline(1e-5, color="gray", ls=":", lw=1)
    ax.set(
        title=f"Elman H={H}, T={T_CHAOS if 'chaotic' in label else T}, {label}",
        xlabel="Newton updates",
    )
axes[0].set_ylabel("residual (gaps: overflow)")
axes[0].legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 4. Time on this machine
#
# The benchmark's own function (`benchmark_parallel.time_case`: every implementation of one
# case compiled first, then timed in one process with interleaved, rotated repetitions;
# median) at batch 16, H = 8 and a short T. "sequential / parallel" above 1 would be a
# speed-up. The full table at T = 10,000 is in `docs/benchmarks.md`
# (`python -m experiments.benchmark_parallel`).

# %%
rows = []
cases = [
    ("lru", ["reference", "parallel"]),
    ("mingru", ["reference", "parallel"]),
    ("gru", ["fused", "deer", "quasi-deer"]),
]  # ELK: slower still (docs/benchmarks.md)
for i, (name, impls) in enumerate(cases):
    record = benchmark_parallel.time_case(config, name, H, T_TIME, impls, jax.random.key(10 + i))
    base = record["impls"][impls[0]]
    for impl in impls[1:]:
        e = record["impls"][impl]
        rows.append(
            (name, impls[0], impl, base["fwd_ms"], e["fwd_ms"], base["fwd_bwd_ms"], e["fwd_bwd_ms"])
        )
print(
    f"B = {config.batch_size}, H = {H}, T = {T_TIME}, {REPS} interleaved repetitions (median); "
    f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs\n"
)
print(
    f"{'cell':7s} {'sequential':10s} {'parallel':11s} {'fwd ms seq / par':>18s} "
    f"{'fwd+bwd ms seq / par':>22s} {'fwd+bwd: seq / par':>19s}"
)
for name, seq, par, f_seq, f_par, fb_seq, fb_par in rows:
    print(
        f"{name:7s} {seq:10s} {par:11s} {f_seq:8.1f} / {f_par:7.1f} {fb_seq:10.1f} / {fb_par:9.1f} "
        f"{fb_seq / fb_par:18.2f}x"
    )

# %% [markdown]
# On this CPU the parallel forms are slower than the sequential loop. One XLA:CPU program
# runs on one core, so the associative scan's O(log T) depth buys nothing while its extra
# work (about 2T combine operations instead of T steps, each over the whole state, and for
# Newton that many times over per iteration) costs. The papers' speed-ups (minGRU 175x at
# T = 512, DEER 68x for a GRU at T = 10k) are GPU numbers, where the T steps of the scan's
# levels run side by side; that is why `impl="auto"` keeps the sequential loop here.
#
# ## 5. Does a linear recurrence let the gradient reach the first step?
#
# The vanishing-gradient question of notebook 03, for the new cells: on the adding problem
# (the answer depends on steps ≈ 1 and ≈ T/2), the gradient that backpropagation through
# time delivers to each state, $\|dL/dh_t\|$ (`diagnostics.state_gradient_norms`, averaged
# over 32 sequences), at initialisation. For the LRU $\partial h_t / \partial h_{t-1} = Λ$
# does not depend on the input, so the ratio $\|dL/dh_1\| / \|dL/dh_T\|$ is set by
# $|λ|^T$, with $|λ|$ on the ring [0.9, 0.999]; for minGRU it is $\prod_t (1 - z_t)$.
# (The LRU reads its output from the new state inside the step, so the state leaving the
# last step receives no gradient from a loss on the outputs; its ratio is taken against
# $h_{T-1}$, as in the study: `vanishing_gradients.grad_ratio`.)

# %%
T_GRAD = 100 if QUICK else 1000
grad_task = tasks.adding_problem(T_GRAD)
probe_xs, probe_y = tasks.sample_batch(grad_task, jax.random.key(8), 32)
readout = readouts.linear(1)
gradient_cells = {
    "vanilla RNN (tanh)": rnnjax.elman(32),
    "GRU": rnnjax.gru(32),
    "LSTM": rnnjax.lstm(32),
    "LRU": rnnjax.lru(32, 0.9, 0.999, math.pi / 10),
    "minGRU": rnnjax.mingru(32),
}
profiles = {}
for name, cell in gradient_cells.items():
    params = cell.init(jax.random.key(9), grad_task.input_size)
    w = readout.init(jax.random.key(11), 32)

    @jax.jit
    def norms(params, w, cell=cell):
        def one(x, y):
            loss = lambda carry, ys: grad_task.loss(readout.apply(w, ys), y)
            return diagnostics.state_gradient_norms(cell, params, x, loss)

        return jnp.mean(jax.vmap(one)(probe_xs, probe_y), axis=0)

    profiles[name] = np.asarray(norms(params, w))
    print(
        f"{name:20s} ||dL/dh_1|| / ||dL/dh_T|| at init, T = {T_GRAD}: "  # 0: below float32
        f"{vanishing_gradients.grad_ratio(profiles[name]):.1e}"
    )

fig, ax = plt.subplots(figsize=(6, 3.6))
for name, p in profiles.items():
    ax.semilogy(np.arange(1, T_GRAD + 1), p, label=name)
ax.set(
    xlabel="time step t",
    ylabel="||dL/dh_t|| (mean over 32 sequences)",
    title=f"Gradient reaching step t at initialisation, adding problem T = {T_GRAD}",
)
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# After training, the study answers the same question: `python experiments/vanishing_gradients.py
# --preset linear` trains every cell on the adding problem at T = 100 (3 seeds, 1000 Adam
# steps, H = 32, one layer and a linear readout). Measured 2026-11-30 (368 s of CPU):
#
# | cell | test loss / baseline (median; seeds solved) | ‖dL/dh_1‖ / ‖dL/dh_T‖, init → trained |
# |---|---|---|
# | vanilla RNN (tanh) | 1.007 (0/3) | 2.2e-10 → 0 |
# | LSTM | 0.006 (3/3) | 4.3e-04 → 0.76 |
# | GRU | 0.002 (3/3) | 1.8e-11 → 0.36 |
# | LRU | 0.976 (0/3) | 0.20 → 0.33 |
# | minGRU | 0.020 (3/3) | 0 (underflow) → 0.26 |
#
# minGRU solves it (its gates open during training). The LRU does not, although more
# gradient reaches its first step than any other cell's: one LRU layer with a linear readout
# is a linear function of the input sequence, and the adding problem's target
# $\sum_t v_t m_t$ is a product of the two input channels. The best linear predictor of it
# scores $(1 - 2/T)$ × baseline = 0.98 at T = 100, where the LRU ends. Orvieto et al. follow
# every LRU layer with a nonlinear MLP/GLU; the LRU row tests the recurrence's memory, which
# is fine, not the product. Details in `docs/reproductions.md`.
