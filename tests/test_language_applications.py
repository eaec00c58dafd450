"""The language applications (char_lm, handwriting_ctc): their baselines, data and metrics against hand computations.

No tiny end-to-end run of either script here: each compiles four training/evaluation
programs (about a minute of CPU on the shared machine), past the suite's time budget; the
scripts were run at their quick presets instead (docs/applications.md).
"""

import numpy as np
import pytest

from experiment_scripts import load

lm = load("char_lm")
hw = load("handwriting_ctc")


# ---------------------------------------------------------------------------------- char LM


def test_kneser_ney_by_hand():
    # text 0 1 0 1 2 (V = 3), bigrams after one start symbol 3: 30 01 10 01 12
    kn = lm.KneserNey([np.array([0, 1, 0, 1, 2])], order=2, vocab_size=3)
    # bigram counts of counts n1 = 3, n2 = 1: D2 = 3/5; continuation counts N1+(.0) = 2,
    # N1+(.1) = N1+(.2) = 1: n1 = 2, n2 = 1, D1 = 1/2; P1(w) = (N1+(.w) - 1/2)/4 + (1/2)(3/4)(1/3)
    p1 = {0: 0.5, 1: 0.25, 2: 0.25}
    # P2(w | 1) = max(c(1w) - 3/5, 0)/2 + (3/5)(2/2) P1(w)
    expected = [max(c - 0.6, 0) / 2 + 0.6 * p1[w] for w, c in ((0, 1), (1, 0), (2, 1))]
    np.testing.assert_allclose(kn.probs(np.array([[1, 0], [1, 1], [1, 2]])), expected)
    assert expected == pytest.approx([0.5, 0.15, 0.35])
    # an unseen context passes everything to the unigram level
    np.testing.assert_allclose(kn.probs(np.array([[2, 0], [2, 1], [2, 2]])), [0.5, 0.25, 0.25])


def test_kneser_ney_is_normalised():
    rng = np.random.default_rng(0)
    docs = [rng.integers(0, 4, size=n) for n in (40, 25, 60)]
    for order in (1, 3, 4):
        kn = lm.KneserNey(docs, order, vocab_size=5)  # symbol 4 never occurs: still some mass
        for context in ([5, 5, 5], [0, 1, 2], [3, 3, 3], [4, 0, 1]):  # 5: the start symbol
            context = context[len(context) - (order - 1):] if order > 1 else []
            windows = np.array([context + [w] for w in range(5)])
            assert kn.probs(windows).sum() == pytest.approx(1.0)
            assert kn.probs(windows)[4] > 0


def test_held_out_topics_share_no_paragraph_with_the_training_text():
    from pydoc_data.topics import topics

    text = lm.Text(test_every=7, min_count=20)
    assert not set(text.test_names) & set(text.train_names)
    assert len(text.train_names) + len(text.test_names) <= len(topics)
    train = "\n".join(topics[n] for n in text.train_names)
    for doc in text.test:
        for paragraph in text.decode(doc).split("\n\n"):
            assert paragraph not in train
    assert text.decode(text.encode("while x:")) == "while x:"


# ------------------------------------------------------------------------------------- CTC


def test_edit_distance_and_error_rates_by_hand():
    assert hw.edit_distance(list("kitten"), list("sitting")) == 3
    assert hw.edit_distance([], [1, 2]) == 2
    rates = hw.error_rates([[1, 2, 3], [4], []], [[1, 2, 3], [4, 5], [6]])
    assert rates == {"sequence_error_rate": pytest.approx(2 / 3), "char_error_rate": pytest.approx(2 / 6)}


def test_lines_are_the_images_side_by_side():
    import jax

    config = hw.Config(min_digits=2, max_digits=3, max_gap=2)
    images = np.random.default_rng(0).random((7, 8, 8)).astype(np.float32)
    labels = np.arange(7, dtype=np.int32) % 10
    lines = jax.jit(hw.make_lines, static_argnums=(3, 4))(jax.random.PRNGKey(0), images, labels, 5, config)
    for b in range(5):
        n = int(lines.num_digits[b])
        assert int(lines.num_frames[b]) == 10 * n
        line = np.zeros((8, 30), np.float32)  # rows x columns, built by hand
        for i in range(n):
            gap = int(np.argmax(np.abs(np.asarray(lines.frames[b, 10 * i:10 * i + 10])).sum(1) > 0))
            line[:, 10 * i + gap:10 * i + gap + 8] = images[int(lines.image_index[b, i])]
            assert gap <= 2
        np.testing.assert_array_equal(np.asarray(lines.frames[b]), line.T)
        assert lines.labels[b, :n].tolist() == (labels[np.asarray(lines.image_index[b, :n])] + 1).tolist()
        assert np.all(np.asarray(lines.labels[b, n:]) == 0)
