"""The paper reproductions in experiments/reproduce/: the gradient-flow results of Zucchet &
Orvieto (2024) and of the transition to chaos against closed forms at small sizes, and a
tiny run of every script (each output well formed, each verdict consistent with its
numbers)."""

import dataclasses
import importlib
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax
from experiments.reproduce import chaos
from experiments.reproduce import truncated_bptt as truncated
from experiments.reproduce import zucchet2024 as zucchet
from rnnjax._src import runs

# ----------------------------------------------------- Zucchet & Orvieto 2024, 1-D closed form


def test_sensitivity_series_sums_to_the_closed_form():
    # Σ_{k>=1} k² q^{k-1} = (1 + q) / (1 - q)³ with q = λ², summed by hand to convergence.
    for lam in (0.3, 0.9, 0.99):
        k = np.arange(1, 20_000, dtype=np.float64)
        assert np.sum(k**2 * lam ** (2 * (k - 1))) == pytest.approx(
            (1 + lam**2) / (1 - lam**2) ** 3, rel=1e-9
        )
        assert zucchet.sensitivity_finite(lam, 20_000) == pytest.approx(
            zucchet.sensitivity_closed_form(lam), rel=1e-9
        )


def test_monte_carlo_sensitivity_matches_the_closed_form_within_its_error():
    lam, num_steps, n = 0.8, 80, 4000  # 0.8^160 ~ 3e-16: T = 80 is the t -> ∞ limit
    sq = zucchet.squared_sensitivities(lam, num_steps, n, jax.random.key(0))
    mean, sem = sq.mean(), sq.std(ddof=1) / math.sqrt(n)
    assert abs(mean - zucchet.sensitivity_closed_form(lam)) < 4 * sem
    assert sem < 0.05 * mean  # the check has teeth: a 20% error would be 4 s.e. off


def test_sensitivity_of_one_sequence_is_the_hand_derivative():
    # h_T = Σ_j λ^j x_{T-j}  =>  dh_T/dλ = Σ_{j>=1} j λ^{j-1} x_{T-j}.
    lam, num_steps = 0.7, 6
    key = jax.random.key(3)
    sq = zucchet.squared_sensitivities(lam, num_steps, 1, key)
    x = np.asarray(jax.random.normal(key, (1, num_steps, 1)), np.float64)[0, :, 0]
    by_hand = sum(j * lam ** (j - 1) * x[num_steps - 1 - j] for j in range(1, num_steps))
    assert sq[0] == pytest.approx(by_hand**2, rel=1e-5)


def test_authors_statistic_is_the_mean_of_finite_seeds_at_the_best_mean_rate():
    inf = np.inf
    final = np.array(
        [
            [[1.0, 3.0, inf], [0.5, 4.5, 1.0]],  # rate 0: mean of finite 2.0; rate 1: 2.0 + 0
            [[inf, inf, inf], [2.0, 2.0, 5.0]],  # every seed of rate 0 diverged
        ]
    )
    got = zucchet.best_over_lr_mean(final)
    assert got[0].estimate == pytest.approx(2.0)  # first of the tied rates: [1, 3]
    assert got[0].high - got[0].low == pytest.approx(4 * np.std([1.0, 3.0], ddof=1) / np.sqrt(2))
    assert got[1].estimate == pytest.approx(3.0)
    assert got[1].high - got[1].estimate == pytest.approx(2 * np.sqrt(3.0) / np.sqrt(3))


def test_lru_student_is_the_authors_lru():
    # The authors' LRUBase (exp parametrisation, learned γ): h_t = λ ⊙ h_{t-1} + γ ⊙ (B x_t),
    # y_t = Re(C h_t) + D x_t, B ~ N(0, 1/N), C ~ N(0, 1); stepped here by a NumPy loop.
    n, nu0 = 64, 0.5
    cell = zucchet.lru_student(zucchet.Config(student_size=n), nu0)
    params = zucchet.student_params("lru", cell, jax.random.key(0))
    p = {k: np.asarray(v, np.float64) for k, v in params["rnn"].items()}
    lam = np.exp(-np.exp(p["nu_log"]) + 1j * np.exp(p["theta_log"]))
    assert np.all((np.abs(lam) >= nu0 - 1e-6) & (np.abs(lam) < 1))
    np.testing.assert_allclose(np.exp(p["gamma_log"]), np.sqrt(1 - np.abs(lam) ** 2), rtol=1e-5)
    assert np.std(np.concatenate([p["B_re"], p["B_im"]])) == pytest.approx(1 / np.sqrt(n), rel=0.25)
    assert np.std(np.concatenate([p["C_re"], p["C_im"]])) == pytest.approx(1.0, rel=0.25)
    xs = jax.random.normal(jax.random.key(1), (7, 1))
    b, c = p["B_re"] + 1j * p["B_im"], p["C_re"] + 1j * p["C_im"]  # (1, N), (N, 1)
    h, expected = np.zeros(n, complex), []
    for x in np.asarray(xs, np.float64):
        h = lam * h + np.exp(p["gamma_log"]) * (x @ b)
        expected.append((h @ c).real + x @ p["D"])
    np.testing.assert_allclose(
        np.asarray(zucchet.predict(cell, params, xs)), np.array(expected), rtol=1e-4, atol=1e-5
    )


def test_teacher_eigenvalues_lie_in_the_memory_ring():
    a = zucchet.eigen_mapped_matrix(np.random.default_rng(0), 10, 0.9)
    radii = np.abs(np.linalg.eigvals(a.astype(np.float64)))
    assert radii.min() >= 0.9 - 1e-4 and radii.max() < 1.0


# ------------------------------------------------------------- truncated BPTT, delayed recall


def test_delayed_recall_targets_are_the_symbols_read_d_steps_before():
    inputs, targets = truncated.delayed_recall_stream(jax.random.key(0), 3, 50, 4, 6)
    inputs, targets = np.asarray(inputs), np.asarray(targets)
    assert inputs.shape == targets.shape == (3, 50) and inputs.min() >= 0 and inputs.max() <= 3
    np.testing.assert_array_equal(targets[:, 6:], inputs[:, :-6])
    chunks = truncated.stream_chunks(inputs, targets, 8)  # 6 whole chunks, 2 symbols dropped
    assert chunks.inputs.shape == (6, 3, 8)
    np.testing.assert_array_equal(chunks.inputs[2, 1], inputs[1, 16:24])
    np.testing.assert_array_equal(chunks.targets[2, 1], targets[1, 16:24])
    np.testing.assert_array_equal(chunks.reset, np.arange(6)[:, None].repeat(3, 1) == 0)
    assert np.all(np.asarray(chunks.lengths) == 8)


def test_memoryless_baseline_is_the_conditional_entropy_of_the_sampled_stream():
    # Plug-in entropy of the target given the last w symbols read, counted on 100,000 steps:
    # ln V for w = d (x_{t-d} not among them; plug-in bias ~ V^d (V-1) / 2N = 3e-4), 0 for
    # w = d + 1.
    v, d = 3, 3
    inputs, targets = truncated.delayed_recall_stream(jax.random.key(1), 20, 5000, v, d)
    inputs, targets = np.asarray(inputs)[:, d:], np.asarray(targets)[:, d:]

    def conditional_entropy(window):
        context = sum(np.roll(inputs, j, axis=1)[:, window:] * v**j for j in range(window))
        counts = np.zeros((v**window, v))
        np.add.at(counts, (context.ravel(), targets[:, window:].ravel()), 1)
        p_joint = counts / counts.sum()
        p_cond = counts / np.maximum(counts.sum(1, keepdims=True), 1)
        mask = counts > 0
        return -np.sum(p_joint[mask] * np.log(p_cond[mask])), np.sum(counts.max(1)) / counts.sum()

    loss, accuracy = truncated.memoryless_baseline(v)
    assert (loss, accuracy) == (pytest.approx(np.log(3)), pytest.approx(1 / 3))
    entropy, best_accuracy = conditional_entropy(d)
    assert entropy == pytest.approx(loss, abs=2e-3)
    assert best_accuracy == pytest.approx(accuracy, abs=0.02)
    assert conditional_entropy(d + 1)[0] == pytest.approx(0.0, abs=1e-12)


# ---------------------------------------------------------------------- transition to chaos


def test_lyapunov_exponent_is_negative_below_and_positive_above_the_transition():
    n, key = 200, jax.random.key(0)
    f = jax.jit(lambda g: chaos.lyapunov_exponents(n, g, key, k=1, warmup=200, num_steps=600)[0])
    below, above = float(f(jnp.float32(0.5))), float(f(jnp.float32(2.0)))
    assert below < 0 < above
    # Below g = 1 the state sits at 0, where the map is g W: the exponent is log(g ρ(W)).
    radius = np.max(np.abs(np.linalg.eigvals(np.asarray(chaos.random_weights(n, key), np.float64))))
    assert below == pytest.approx(np.log(0.5 * radius), abs=0.02)
    # Above it, mean-field theory (N -> ∞) within the finite-size error of N = 200.
    assert above == pytest.approx(chaos.mean_field_lambda_max(2.0), rel=0.25)


def test_mean_field_lambda_max_against_adaptive_quadrature():
    from scipy import integrate

    def gauss(f):  # E[f(z)], z ~ N(0, 1), by adaptive quadrature
        return integrate.quad(
            lambda z: f(z) * np.exp(-z * z / 2) / np.sqrt(2 * np.pi), -np.inf, np.inf, epsabs=1e-13
        )[0]

    for g in (1.2, 2.0, 3.0):
        delta = 1.0
        for _ in range(200):
            delta = g**2 * gauss(lambda z: np.tanh(np.sqrt(delta) * z) ** 2)
        expected = 0.5 * np.log(g**2 * gauss(lambda z: (1 - np.tanh(np.sqrt(delta) * z) ** 2) ** 2))
        assert chaos.mean_field_lambda_max(g) == pytest.approx(expected, abs=1e-6)
    assert chaos.mean_field_lambda_max(0.5) == pytest.approx(np.log(0.5))
    assert chaos.mean_field_lambda_max(1.0) == pytest.approx(0.0, abs=1e-6)


def test_kaplan_yorke_dimension_and_zero_crossing_by_hand():
    # Partial sums 0.5, 0.6, 0.3, -0.7: j = 3 and D = 3 + 0.3 / |-1|.
    assert chaos.kaplan_yorke_dimension(np.array([0.1, -1.0, 0.5, -0.3])) == pytest.approx(3.3)
    assert chaos.kaplan_yorke_dimension(np.array([-0.1, -0.2])) == 0.0
    # From -0.1 at g = 1 to 0.2 at g = 1.5: zero a third of the way, g = 7/6.
    assert chaos.zero_crossing(
        np.array([0.5, 1.0, 1.5]), np.array([-0.4, -0.1, 0.2])
    ) == pytest.approx(7 / 6)


# ------------------------------------------------------------ every script's command line

SCRIPTS = (
    "pascanu2013",
    "le2015_irnn",
    "tallec2018_chrono",
    "zucchet2024",
    "chaos",
    "truncated_bptt",
)


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_preset_is_a_valid_config_and_flags_override_it(name, capsys):
    module = importlib.import_module(f"experiments.reproduce.{name}")
    with pytest.raises(SystemExit) as exit_:
        module.main(["--help"])
    assert exit_.value.code == 0 and "--preset" in capsys.readouterr().out
    for preset in module.PRESETS:
        config, opts = runs.parse_config(
            module.Config,
            module.PRESETS,
            ["--preset", preset],
            description="",
            name=f"reproduce/{name}",
        )
        module.check_config(config)
        assert config == module.Config(**module.PRESETS[preset])
        assert opts.run_dir == os.path.join("runs", "reproduce", name, preset)
    config, _ = runs.parse_config(
        module.Config,
        module.PRESETS,
        ["--preset", "tiny", "--seed", "7"],
        description="",
        name=f"reproduce/{name}",
    )
    assert config == module.Config(**{**module.PRESETS["tiny"], "seed": 7})


# ------------------------------------------------- one script end to end, at its tiny preset
# Every script's tiny preset costs 10-25 s of CPU (XLA compilation); the suite runs the
# cheapest one, which exercises the shared run directory, claims and figures.
# `python -m experiments.reproduce.run_all --preset tiny` runs all five (~100 s of CPU).


@pytest.mark.slow
def test_tiny_run_writes_claims_computed_from_its_numbers(tmp_path):
    out = chaos.main(["--preset", "tiny", "--run-dir", str(tmp_path)])
    with open(tmp_path / "results.json") as f:
        record = json.load(f)
    assert [c["claim"] for c in record["claims"]] == [c.claim for c in out["claims"]]
    for c in record["claims"]:
        assert (
            c["reproduced"] in (True, False, None) and c["paper"] and c["ours"] and c["paper_value"]
        )
    with open(tmp_path / "config.json") as f:
        assert json.load(f) == {
            k: list(v) if isinstance(v, tuple) else v
            for k, v in vars(chaos.Config(**chaos.PRESETS["tiny"])).items()
        }
    summary = (tmp_path / "summary.md").read_text()
    assert "| where | claim | paper's number | ours | reproduced? |" in summary
    figures = list((tmp_path / "figures").glob("*.png"))
    assert figures and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in figures)
    # The sign claim reports, and its verdict requires, λ_max(0.5) < 0 < λ_max(2) in every network.
    lam = np.asarray(record["lambda_max"]["8"])  # (gains, networks)
    signs = bool(np.all(lam[0] < 0) and np.all(lam[-1] > 0))
    assert ("in every network: yes" in out["claims"][0].ours) == signs
    assert signs or not out["claims"][0].reproduced


@pytest.mark.slow
def test_truncated_bptt_tiny_run_computes_its_verdicts_from_its_numbers(tmp_path):
    out = truncated.main(["--preset", "tiny", "--run-dir", str(tmp_path)])
    config = truncated.Config(**truncated.PRESETS["tiny"])
    with open(tmp_path / "results.json") as f:
        record = json.load(f)
    trained = record["runs"]
    assert sorted(trained, key=int) == [str(k) for k in config.truncations]
    baseline = record["baseline_loss"]
    assert baseline == pytest.approx(math.log(config.vocab_size))
    final = {
        int(k): np.median(np.asarray(r["test_loss"])[:, -1]) / baseline for k, r in trained.items()
    }
    lowest = {
        int(k): np.min(np.median(np.asarray(r["test_loss"]), axis=0)) / baseline
        for k, r in trained.items()
    }
    long_k = [k for k in final if k > config.delay]
    short_k = [k for k in final if k <= config.delay]
    assert out["claims"][0].reproduced == all(final[k] <= config.learns_fraction for k in long_k)
    assert out["claims"][1].reproduced == all(lowest[k] >= config.stays_fraction for k in short_k)
    for k, r in trained.items():  # one update per chunk of k steps
        assert r["steps"][-1] == config.num_steps and r["symbols"][-1] == config.num_steps * int(k)
    assert (tmp_path / "figures" / "loss_vs_truncation.png").read_bytes()[:4] == b"\x89PNG"


# ------------------------------------------------------- the docs' table against the scripts

_DOCS = os.path.join(os.path.dirname(__file__), os.pardir, "docs", "reproductions.md")


def _docs_verdicts() -> dict:
    """Returns {(paper, where, claim): verdict} of the table "All claims at a glance" in the docs."""
    with open(_DOCS) as f:
        section = f.read().split("## All claims at a glance")[1].split("\n## ")[0]
    rows = [
        [c.strip() for c in line.strip().strip("|").split("|")] for line in section.splitlines()
    ]
    return {tuple(r[:3]): r[-1].strip("*") for r in rows if len(r) == 6 and r[-1].startswith("**")}


def test_docs_count_of_reproduced_claims_matches_their_table():
    verdicts = list(_docs_verdicts().values())
    assert len(verdicts) == 16 and set(verdicts) <= {"yes", "no", "inconclusive"}
    count = f"{verdicts.count('yes')} of {len(verdicts)} claims reproduced at the quick presets"
    with open(_DOCS) as f:
        assert count in f.read()
    with open(os.path.join(os.path.dirname(_DOCS), os.pardir, "README.md")) as f:
        assert count in f.read()


@pytest.mark.slow
@pytest.mark.timeout(3600)  # every quick preset: 15 minutes of one core, more beside other tests
def test_quick_presets_give_the_verdicts_in_the_docs(tmp_path):
    # `make reproduce` (about 15 minutes of CPU): every verdict equals the docs' table.
    from experiments.reproduce import run_all

    claims = run_all.main(["--run-dir", str(tmp_path)])
    ours = {
        tuple(x.replace("|", "/") for x in (c.paper, c.where, c.claim)): runs.verdict_text(
            c.reproduced
        )
        for c in claims
    }
    assert ours == _docs_verdicts()


# ------------------------------------ Zucchet & Orvieto 2024, the authors' scan (shared inputs)


def test_lag_gram_is_the_sum_of_the_lag_embeddings_gram_matrices():
    # M = Σ_b Z_bᵀ Z_b with Z_b[t, j] = x[b, t - j] (0 for j > t), built by loops.
    xs = np.random.default_rng(0).standard_normal((3, 7))
    z = np.zeros((3, 7, 7))
    for b in range(3):
        for t in range(7):
            for j in range(t + 1):
                z[b, t, j] = xs[b, t - j]
    brute = np.einsum("btj,btk->jk", z, z)
    np.testing.assert_allclose(
        zucchet.lag_gram(jnp.asarray(xs, jnp.float32)), brute, rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("model", ["rnn", "lru"])
def test_quadratic_loss_is_the_batch_loss_with_its_gradient(model):
    # The shared-inputs path trains on 0.5 EᵀME/(BT); it must be the batch's mean squared
    # error of predict() over the sequences, value and gradient, for both students.
    config = zucchet.Config(seq_len=12, teacher_size=3, student_size=5, batch_size=4, nu0s=(0.9,))
    cell = zucchet.student_cell(config, model)
    student = zucchet.student_params(
        model, zucchet.lru_student(config, 0.9) if model == "lru" else cell, jax.random.key(1)
    )
    teacher_cell = rnnjax.elman(3, "identity", use_bias=False)
    teacher = zucchet.make_teacher(np.random.default_rng(2), config, 0.9)
    xs = jax.random.normal(jax.random.key(3), (4, 12))

    def batch_loss(student):
        ys = jax.vmap(lambda x: zucchet.predict(cell, student, x[:, None]))(xs)
        targets = jax.vmap(lambda x: zucchet.predict(teacher_cell, teacher, x[:, None]))(xs)
        return 0.5 * jnp.mean(jnp.square(ys - targets))

    kernel = zucchet.impulse_response(teacher_cell, teacher, 12)
    gram = zucchet.lag_gram(xs)
    quadratic = lambda student: zucchet.quadratic_loss(cell, student, kernel, gram, 4)
    assert float(quadratic(student)) == pytest.approx(float(batch_loss(student)), rel=1e-5)
    for got, want in zip(
        jax.tree.leaves(jax.grad(quadratic)(student)),
        jax.tree.leaves(jax.grad(batch_loss)(student)),
    ):
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-6)


def test_shared_inputs_runs_share_their_seeds_inputs_and_report_every_run():
    # Tiny shared-inputs scan: results in (ν0, rate, seed) order, one curve per run, and a
    # run's loss curve at step 0 is the quadratic loss of its initial state on its seed's batch.
    config = dataclasses.replace(
        zucchet.Config(**zucchet.PRESETS["tiny"]),
        num_seeds=2,
        rnn_lrs=(1e-3, 1e-2),
        shared_inputs=True,
    )
    out = zucchet.train_students(config, "rnn", jax.random.key(0))
    assert out["final_loss"].shape == (2, 2, 2)
    assert out["curves"].shape == (2, 2, 2, config.num_steps)
    assert np.all(np.isfinite(out["final_loss"]))
    # Same (ν0, seed), different rates: same init, same inputs, so the same first loss.
    np.testing.assert_allclose(out["curves"][:, 0, :, 0], out["curves"][:, 1, :, 0], rtol=1e-6)
    assert not np.allclose(out["curves"][:, :, 0, 0], out["curves"][:, :, 1, 0])


def test_memory_verdict_decides_on_the_intervals_of_the_log_losses():
    # (ν0, lr, seed): one rate; RNN grows 1e3 on every seed, LRU 2x; then an LRU whose seeds
    # disagree (1x and 1e4x) so its growth's interval straddles 10x.
    seeds = np.array([1.0, 1.2, 0.9])
    rnn = {"final_loss": np.stack([seeds * 1e-6, seeds * 1e-3])[:, None, :]}
    lru = {"final_loss": np.stack([seeds * 1e-6, seeds * 2e-6])[:, None, :]}
    verdict, intervals = zucchet.memory_verdict({"rnn": rnn, "lru": lru})
    assert verdict is True
    assert intervals["growth"]["rnn"].estimate == pytest.approx(3.0)
    assert intervals["growth"]["lru"].estimate == pytest.approx(math.log10(2.0))
    wide = {"final_loss": np.array([[1e-6, 1e-6, 1e-6], [1e-6, 1e-2, 1e-3]])[:, None, :]}
    assert zucchet.memory_verdict({"rnn": rnn, "lru": wide})[0] is None
    flat_rnn = {"final_loss": np.stack([seeds * 1e-6, seeds * 1e-6])[:, None, :]}
    assert zucchet.memory_verdict({"rnn": flat_rnn, "lru": lru})[0] is False
    # Every RNN seed diverged at the last ν0: growth +inf, still a decided "degrades".
    diverged = {"final_loss": np.array([[1e-6] * 3, [np.inf] * 3])[:, None, :]}
    assert zucchet.memory_verdict({"rnn": diverged, "lru": lru})[0] is True
