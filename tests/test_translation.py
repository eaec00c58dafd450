"""experiments/translation.py: its tokens, split and table against hand computations; a tiny end-to-end run (slow)."""

import os

import numpy as np
import pytest
from experiment_scripts import load, read_run

tr = load("translation")


def test_spellings_by_hand_and_pieces_join_back_to_num2words():
    from num2words import num2words

    assert tr.english_words(42) == ["forty", "two"]
    assert tr.german_pieces(42) == ["zwei", "und", "vierzig"]
    assert tr.english_words(1999) == ["one", "thousand", "nine", "hundred", "and", "ninety", "nine"]
    assert tr.german_pieces(1999) == ["ein", "tausend", "neun", "hundert", "neun", "und", "neunzig"]
    assert tr.german_pieces(17) == ["siebzehn"] and tr.german_pieces(77) == [
        "sieben",
        "und",
        "siebzig",
    ]
    assert tr.german_pieces(2_000_016) == ["zwei", " ", "millionen", " ", "sechzehn"]
    rng = np.random.default_rng(0)
    numbers = np.concatenate([np.arange(1, 200), rng.integers(200, 10**9, 300)])
    for n in numbers:  # lossless: every spelling is cut into pieces, which join back to it
        assert "".join(tr.german_pieces(int(n))) == num2words(int(n), lang="de").lower()
    vocab = tr.Vocab.make()
    pairs = tr.encode(numbers, vocab)
    for i in (0, 41, 250):
        n, k = pairs.source_length[i], pairs.target_length[i]
        assert [vocab.english[t] for t in pairs.source[i, :n]] == tr.english_words(int(numbers[i]))
        assert [vocab.german[t] for t in pairs.target[i, :k]] == tr.german_pieces(
            int(numbers[i])
        ) + ["<end>"]
        assert not pairs.source[i, n:].any() and not pairs.target[i, k:].any()


def test_held_out_numbers_are_never_in_a_training_pool():
    config = tr.Config(max_digits=4, num_test=40, pool_per_digit=300)
    test, pools = tr.split_numbers(config)
    # 10 per digit count, but at most a third of the 9 one-digit numbers
    assert len(test) == 3 + 10 + 10 + 10 and len(set(test.tolist())) == len(test)
    assert [len(p) for p in pools] == [6, 80, 300, 300]
    for d, pool in enumerate(pools, 1):
        assert np.all((pool >= 10 ** (d - 1)) & (pool < 10**d)) and len(set(pool.tolist())) == len(
            pool
        )
        assert not set(pool.tolist()) & set(test.tolist())


def test_buckets_and_verdict_by_hand():
    assert tr.source_buckets(np.array([1, 5, 11])) == [(1, 3), (4, 6), (7, 9), (10, 11)]
    config = tr.Config(models=("none", "luong"))

    def model(exact_long, overall):
        return {
            "exact_match": overall,
            "num_params": 10,
            "train_wall_s": 1.0,
            "by_source_length": {
                "1-3": {"count": 20, "exact_match": 1.0},
                "4-5": {"count": 100, "exact_match": exact_long},
            },
        }

    results = {
        "num_test": 120,
        "num_train_pool": 500,
        "models": {"none": model(0.5, 0.6), "luong": model(0.7, 0.75)},
    }
    lines = tr.verdict(config, results)
    # standard error sqrt((0.7 * 0.3 + 0.5 * 0.5) / 100) = 0.0678; the difference 0.2 > 2 s.e.
    assert "luong attention reaches exact match 0.700 vs 0.500" in lines[0]
    assert "attention measurably better (difference +0.200, 2 standard errors = 0.136)" in lines[0]
    results["models"]["luong"] = model(0.6, 0.7)
    assert "NOT measurably better" in tr.verdict(config, results)[0]
    table = tr.summary_tables(config, results)
    assert "| 4-5 words | 100 | 0.5 | 0.6 |" in table and "| all | 120 | 0.6 | 0.7 |" in table


@pytest.mark.slow
def test_tiny_translation_run(tmp_path):
    run_dir = str(tmp_path / "run")
    out = tr.main(
        [
            "--max-digits",
            "3",
            "--num-test",
            "30",
            "--pool-per-digit",
            "40",
            "--models",
            "none",
            "bahdanau",
            "--hidden-size",
            "4",
            "--embed-size",
            "4",
            "--num-steps",
            "4",
            "--eval-every",
            "2",
            "--batch-size",
            "8",
            "--no-progress",
            "--run-dir",
            run_dir,
        ]
    )
    config, results, summary = read_run(run_dir)
    assert config["models"] == ["none", "bahdanau"] and config["max_digits"] == 3
    r = results["results"][0]
    assert r["num_test"] == 3 + 10 + 10
    for name in ("none", "bahdanau"):
        m = r["models"][name]
        assert m["eval_steps"] == [0, 2, 4] and len(m["train_loss"]) == 4
        counts = [b["count"] for b in m["by_source_length"].values()]
        assert sum(counts) == 23
        overall = sum(b["count"] * b["exact_match"] for b in m["by_source_length"].values()) / 23
        assert m["exact_match"] == pytest.approx(overall)
    ex = r["models"]["bahdanau"]["attention_example"]
    weights = np.asarray(ex["weights"])
    assert weights.shape == (len(ex["output"]), len(ex["source"]))
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-5)
    assert "attention_example" not in r["models"]["none"]
    assert "VERDICT" in summary and "| no attention | bahdanau attention |" in summary
    assert out["verdict"] == results["verdict"]
    for name in ("exact_match_by_length", "attention", "learning_curves"):
        with open(os.path.join(run_dir, "figures", name + ".png"), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
