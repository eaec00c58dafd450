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
# # 09 · The recurrent cells of current models: gradient flow and Jacobian spectra at initialisation
#
# Four cells that language models use now, beside the LSTM and the LRU:
#
# - **RG-LRU** (Griffin/Hawk, De et al. 2024): a diagonal recurrence whose decay
#   $a_t = \sigma(\Lambda)^{c r_t}$ is gated by the input, with input normalisation
#   $\sqrt{1 - a_t^2}$;
# - **the selective SSM** of Mamba (Gu & Dao 2023, "S6"): $N$ states per channel,
#   $h_t = \exp(\Delta_t A) h_{t-1} + \Delta_t B_t u_t$ with $\Delta_t, B_t, C_t$ read from the input;
# - **sLSTM** and **mLSTM** (xLSTM, Beck et al. 2024): exponential input gates with a
#   normaliser and a log-space stabiliser; the mLSTM has a matrix memory and is linear in it.
#
# RG-LRU, the selective SSM and the mLSTM are linear in their state. For the first two the
# step Jacobian $\partial h_t / \partial h_{t-1}$ does not depend on the state: it is the
# diagonal decay alone (the mLSTM carries a stabiliser that its Jacobian reads). Zucchet &
# Orvieto (2024) argue that such diagonal, input-gated recurrences are what lets gradients
# survive long sequences. Here we measure, at the initialisation each paper gives:
#
# 1. how much of the gradient of a loss at the last step reaches each earlier step,
#    $\|\partial L / \partial h_t\|$ (`rnnjax.diagnostics.state_gradient_norms`);
# 2. the singular values of the step Jacobians and the Lyapunov spectrum of the input-driven
#    cell (`step_jacobians`, `lyapunov_spectrum`).
#
# Every cell comes from the one table of built-in cells, `rnnjax.CELLS`, with its
# label and colour. Set `RNNJAX_QUICK=1` to shrink every size (the test suite does).

# %%
import os

import jax
import jax.flatten_util
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import rnnjax
from rnnjax import diagnostics

QUICK = os.environ.get("RNNJAX_QUICK") == "1"
H = 8 if QUICK else 16  # hidden units (the selective SSM: H channels of N = 16 states)
T = 40 if QUICK else 100  # sequence length
NUM_SEQ = 2 if QUICK else 4  # input sequences averaged over
I = 2  # input features
NAMES = ["lstm", "lru", "rg_lru", "selective_ssm", "slstm", "mlstm"]
print("JAX", jax.__version__, "on", jax.devices()[0].platform, f"| H = {H}, T = {T}")

key = jax.random.key(0)
k_x, k_w = jax.random.split(key)
xs = jax.random.normal(k_x, (NUM_SEQ, T, I))
cells = {name: rnnjax.make_cell(name, H) for name in NAMES}
params = {name: cell.init(k_w, I) for name, cell in cells.items()}
spec = rnnjax.CELLS
for name, cell in cells.items():  # which loop each runs: rnnjax.scan_path
    state = jax.flatten_util.ravel_pytree(cell.initial_carry(params[name]))[0]
    linear = isinstance(cell.step, rnnjax.LinearStep)  # only those run as one associative scan
    parallel = rnnjax.scan_path(cell, "parallel") if linear else "-"
    print(
        f"{spec[name].label:26s} state size {state.size:4d} | impl='auto': "
        f"{rnnjax.scan_path(cell):9s} impl='parallel': {parallel}"
    )

# %% [markdown]
# ## 1. Gradient flow: how much of $\partial L / \partial h_T$ reaches step $t$
#
# $L$ is the sum of the last output, $L = \sum_i y_{T,i}$; the curves are
# $\|\partial L / \partial h_t\|$ (the whole carry, flattened: $(h, c)$ for the LSTM, the
# $(H, N)$ state of the SSM, the matrix memory, normaliser and stabiliser of the mLSTM),
# divided by its largest value over $t$ and averaged over the input sequences. (For a cell
# whose output is read from its state inside the step — LRU, SSM, mLSTM — $y_T$ does not
# depend on the carry leaving step $T$, so the last row is 0: see
# `diagnostics.state_gradients`.)


# %%
def gradient_flow(name):
    cell, p = cells[name], params[name]
    norms = jax.vmap(
        lambda x: diagnostics.state_gradient_norms(cell, p, x, lambda final, ys: jnp.sum(ys[-1]))
    )(xs)
    return np.asarray(jnp.mean(norms / jnp.max(norms, axis=1, keepdims=True), axis=0))


flow = {name: gradient_flow(name) for name in NAMES}
fig, ax = plt.subplots(figsize=(6, 3.6))
for name, ratio in flow.items():
    shown = np.where(ratio > 0, ratio, np.nan)  # the zero last rows are not drawn
    ax.plot(np.arange(1, T + 1), shown, color=spec[name].color, label=spec[name].label)
ax.set(yscale="log", xlabel="time step $t$", title="gradient flow at initialisation")
ax.set_ylabel(r"$\|\partial L/\partial h_t\| \,/\, \max_s \|\partial L/\partial h_s\|$")
ax.legend(fontsize=7)
plt.show()
for name, ratio in flow.items():
    print(f"{spec[name].label:26s} ||dL/dh_1|| / max_t ||dL/dh_t|| = {ratio[0]:.2e}")

# %% [markdown]
# ## 2. Jacobian spectra: step singular values and Lyapunov exponents
#
# Left: the singular values of the step Jacobian $\partial h_t / \partial h_{t-1}$, averaged
# over the steps of one sequence (each cell's largest 32; the selective SSM has $16H$). For the
# diagonal recurrences they are the decays $a_t$ themselves, all below 1 by construction:
# a recurrence that is linear in its state with $|a_t| \le 1$ cannot explode. Right: the
# Lyapunov exponents $\lambda_i$ (nats per step; Engelken, Wolf & Abbott 2020): the average
# exponential rate at which the input-driven cell forgets a perturbation along each
# direction; $e^{\lambda_1 T}$ is about how much of it survives $T$ steps. The LRU's state is
# complex and the diagnostics differentiate real states, so its spectra are drawn from their
# closed form: its step Jacobian is $\mathrm{diag}(\lambda)$, singular values $|\lambda_i|$,
# exponents $\log |\lambda_i|$. The xLSTM cells carry their stabiliser $m$ (and the
# normaliser $n$) in the state, so theirs are the Jacobians of that stabilised carry. Every
# cell starts from its state after the first step: from the zero state (nothing stored,
# $n = 0$) the sLSTM's first step gives the past weight 0 exactly, a zero Jacobian whose
# exponents would all be $-\infty$.

# %%
K = 32  # spectra drawn per cell
# A random initial basis: along a unit vector the step Jacobian can be singular (the sLSTM's
# stabiliser state), which gives an exponent of -inf for that direction.
k_basis = jax.random.key(1)


def spectra(name):
    cell, p = cells[name], params[name]
    if name == "lru":  # a complex state: its step Jacobian is diag(λ), |λ| = exp(-exp(ν))
        modulus = np.sort(np.exp(-np.exp(np.asarray(p["nu_log"]))))[::-1]
        return modulus[:K], np.log(modulus[:K])
    carry = rnnjax.scan(cell, p, xs[0, :1])[0]  # from the state after the first step
    sv = diagnostics.singular_values(diagnostics.step_jacobians(cell, p, xs[0, 1:], carry=carry))
    k = min(K, sv.shape[1])
    lyapunov = diagnostics.lyapunov_spectrum(cell, p, xs[0, 1:], carry=carry, k=k, key=k_basis)
    return np.asarray(jnp.mean(sv, axis=0))[:k], np.sort(np.asarray(lyapunov))[::-1]


measured = {name: spectra(name) for name in NAMES}
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
for name, (sv, lyapunov) in measured.items():
    style = dict(color=spec[name].color, label=spec[name].label, marker="o", markersize=2.5)
    ax1.plot(np.arange(1, sv.size + 1), sv, **style)
    ax2.plot(np.arange(1, lyapunov.size + 1), lyapunov, **style)
ax1.axhline(1.0, color="0.6", lw=0.8, ls="--")
ax1.set(yscale="log", xlabel="index", ylabel="singular value", title="step Jacobians (mean over t)")
ax2.axhline(0.0, color="0.6", lw=0.8, ls="--")
ax2.set(xlabel="index", ylabel=r"$\lambda_i$ (nats / step)", title="Lyapunov spectrum")
ax2.legend(fontsize=7)
plt.tight_layout()
plt.show()
print(f"{'cell':26s} {'max σ':>8s} {'λ_1':>9s} {'e^(λ_1 T)':>10s}")
for name, (sv, lyapunov) in measured.items():
    print(f"{spec[name].label:26s} {sv[0]:8.3f} {lyapunov[0]:9.4f} {np.exp(lyapunov[0] * T):10.2e}")

# %% [markdown]
# ## 3. Check: for the diagonal recurrences the spectra are the decays
#
# The RG-LRU's step Jacobian is $\mathrm{diag}(a_t)$ with $a_t = \sigma(\Lambda)^{8 r_t}$, so
# its Lyapunov exponents are the time averages of $\log a_t$ — computed here from the
# parameters, independently of the diagnostics. (Started from the unit vectors, the QR method
# keeps a diagonal recurrence's coordinates apart and gives them exactly; from the random
# basis above, nearby exponents mix over a short sequence and converge only as $T$ grows.)

# %%
p = params["rg_lru"]
u = xs[0] @ p["W_in"]
log_a = -8.0 * jax.nn.sigmoid(u @ p["W_a"] + p["b_a"]) * jax.nn.softplus(-p["Lambda"])
closed_form = np.sort(np.asarray(jnp.mean(log_a, axis=0)))[::-1]
lyapunov = diagnostics.lyapunov_spectrum(cells["rg_lru"], p, xs[0])  # the unit basis
error = np.max(np.abs(closed_form - np.sort(np.asarray(lyapunov))[::-1]))
print(f"RG-LRU: largest |λ_i - mean_t log a_t,i| = {error:.1e}")
assert error < 1e-5
