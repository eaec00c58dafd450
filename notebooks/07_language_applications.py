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
# # 07 · Language applications: a character language model, captioning, sentiment, handwriting with CTC, translation with attention
#
# The tutorial this library grew from gives one example per kind of RNN: language modelling,
# image captioning (one-to-many), sentiment (many-to-one), translation (encoder-decoder) and
# connected handwriting (LSTM with CTC). Here each one trains on real data that ships with
# Python or inside a PyPI wheel (nothing is downloaded), next to a classical method measured
# on the same held-out data:
#
# | application | data | RNN | baseline |
# |---|---|---|---|
# | character language model | `pydoc_data.topics` (standard library), held-out topics | `rnnjax.language_model`, LSTM, stateful truncated BPTT | interpolated Kneser-Ney n-grams |
# | captioning | scikit-learn's 8x8 digits, 1-3 side by side, captions in English words | feed-forward net -> initial carry (`language_models.carry_bridge`) -> LSTM `language_model`; greedy and beam search | logistic regression per digit, told the segmentation, spelled |
# | sentiment | VADER lexicon (`vaderSentiment` wheel), mean of ten human ratings per word | `many_to_one` bidirectional LSTM over characters, `length=` | character n-gram ridge / logistic regression |
# | handwriting with CTC | lines of digit images | bidirectional LSTM, `optax.ctc_loss`; best path and prefix beam search | logistic regression per digit, told the segmentation |
# | translation | English number words → German (`num2words` wheel), held-out numbers | `encoder_decoder`, bidirectional LSTM encoder, with and without Luong attention | the same model without attention |
#
# Each section calls the pieces of the experiment script (`experiments/char_lm.py`,
# `captioning.py`, `sentiment.py`, `handwriting_ctc.py`, `translation.py`) at a **small size**, so that the whole
# notebook runs in about six minutes of CPU: these models are smaller and trained for far
# fewer steps than the scripts' presets, and their numbers are below those in
# `docs/applications.md`, which holds the quick and full presets' tables. With
# `RNNJAX_QUICK=1` (the test suite) every size shrinks to a few steps and the numbers mean
# nothing.

# %%
import os
import sys

import jax
import matplotlib.pyplot as plt
import numpy as np

QUICK = os.environ.get("RNNJAX_QUICK") == "1"
# experiments/ is a package of the repository (not of the wheel): import it from the root.
sys.path.insert(0, os.path.abspath(os.path.join(os.getcwd(), os.pardir)))
from experiments import captioning, char_lm, handwriting_ctc, sentiment, translation

# %% [markdown]
# ## 1. A character language model of Python's documentation
# The topics `help()` shows, split by topic: every 7th is held out (less its paragraphs that
# occur verbatim in training). The LSTM (256 units) reads the training topics as 32 streams of
# 64-character chunks, the carry passed from chunk to chunk (truncated BPTT) and reset where a
# topic starts; the learning rate decays to zero on a cosine.
# Kneser-Ney n-grams are fitted on the same training text; every model scores the same
# held-out characters, in bits per character (lower is better).

# %%
lm_config = char_lm.Config(
    hidden_size=16 if QUICK else 256,
    num_steps=4 if QUICK else 700,
    lr_schedule="cosine",
    eval_every=2 if QUICK else 100,
    ngram_orders=(3, 5, 7),
    sample_length=20 if QUICK else 240,
)
text = char_lm.Text(lm_config.test_every, lm_config.min_count)
ngram_bpc = {
    k: char_lm.KneserNey(text.train, k, len(text.chars)).bits_per_char(text.test)
    for k in lm_config.ngram_orders
}
lm_result = char_lm.train_rnn(lm_config, text, jax.random.PRNGKey(0), progress=False)
print(
    f"{sum(map(len, text.train)):,} training and {sum(map(len, text.test)):,} held-out characters, "
    f"{len(text.chars)} symbols"
)
print(
    f"LSTM {lm_config.hidden_size}, {lm_config.num_steps} steps "
    f"({lm_config.num_steps / lm_result['steps_per_epoch']:.1f} epochs): "
    f"{lm_result['test_bpc']:.3f} bits per character"
)
for k, bpc in ngram_bpc.items():
    print(f"Kneser-Ney {k}-gram: {bpc:.3f} bits per character")

fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(lm_result["train_steps"], lm_result["train_bpc_curve"], lw=0.6, label="training chunks")
ax.plot(lm_result["eval_steps"], lm_result["test_bpc_curve"], "o-", label="held-out topics")
for k, bpc in ngram_bpc.items():
    ax.axhline(bpc, ls="--", lw=0.8, color=plt.cm.Greys(0.3 + k / 10), label=f"Kneser-Ney {k}-gram")
ax.set_xlabel("training step")
ax.set_ylabel("bits per character")
ax.set_ylim(1.5, 5)
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# A model this size trained this briefly (700 steps, 3.7 epochs: 2.055 bits per character)
# beats the 3-gram but not the 5- and 7-gram models. The script's full preset (LSTM 384,
# dropout 0.25 through `language_model(..., dropout=)`, 3000 steps, 24 minutes of one core)
# beats the best n-gram, 1.743 against 1.849 bits per character for the 9-gram
# (`docs/applications.md`). Samples after the prompt `The "while" statement`, drawn inside
# one `lax.scan` (`LanguageModel.generate`): greedy decoding (the limit of temperature -> 0)
# falls into the most probable loop ("the string of the string of ..."); sampling at
# temperature 0.8 among the 10 most likely characters gives English-like sentences in the
# documentation's vocabulary, quoted names and all; temperature 1 invents more.

# %%
for name, sample in lm_result["samples"].items():
    print(f"--- {name}")
    print(sample[len(char_lm.PROMPT) :])

# %% [markdown]
# ## 2. Captioning: the number on an image, in words
# One to three digit images side by side (8 x 24 pixels), captioned by the number in English
# words: "seven", "forty two", "three hundred five". The caption is a small language of its
# own: a teen is one word for two digits, a zero is silent, so the decoder cannot copy one
# word per digit. A feed-forward net maps the pixels to the LSTM's initial carry
# (`rnnjax.readouts.carry_bridge`); the LSTM is a `language_model` that reads the start
# token, then its own words. The held-out images are made of digit images no model saw.

# %%
cap_config = captioning.Config(
    hidden_size=8 if QUICK else 128,
    feature_size=8 if QUICK else 256,
    num_steps=4 if QUICK else 800,
    eval_every=2 if QUICK else 200,
    num_test=50 if QUICK else 500,
)
digits = handwriting_ctc.digit_images(cap_config.test_images, cap_config.seed)
key = jax.random.PRNGKey(cap_config.seed)
numbers = jax.jit(captioning.make_numbers, static_argnums=3)(
    jax.random.fold_in(key, 1), digits["test_images"], digits["test_labels"], cap_config.num_test
)
cap = {
    "num_digits": np.asarray(numbers.num_digits),
    "truth_captions": [" ".join(captioning.spell(int(n))) for n in np.asarray(numbers.number)],
    "segmented_exact": captioning.segmented_classifier(digits, numbers),
    "rnn": captioning.train_and_caption(
        cap_config, digits, numbers, jax.random.fold_in(key, 2), progress=False
    ),
}
print(
    captioning.summary_tables(
        cap_config,
        {
            **cap,
            "num_test_images": len(digits["test_labels"]),
            "num_train_images": len(digits["train_labels"]),
        },
    )
)
print("\n".join(captioning.verdict(cap_config, cap)))

# %% [markdown]
# Held-out images with their captions, the images where beam search (width 4) chose another
# caption than greedy decoding first. Beam search ranks whole captions by their
# log-probability, so its caption is at least as probable as greedy's under the model
# (tests/test_decoding.py); whether it is more often right is the table's question.

# %%
rnn = cap["rnn"]
changed = [
    i for i in range(cap_config.num_test) if rnn["greedy_captions"][i] != rnn["beam_captions"][i]
]
shown = (changed + [i for i in range(cap_config.num_test) if i not in changed])[:8]
fig, axes = plt.subplots(4, 2, figsize=(8, 6.5))
for ax, i in zip(axes.flat, shown):
    ax.imshow(np.asarray(numbers.pixels[i]).reshape(8, 24), cmap="gray_r")
    ax.set_axis_off()
    ax.set_title(
        f"truth: {cap['truth_captions'][i]}\ngreedy: {rnn['greedy_captions'][i]}\n"
        f"beam: {rnn['beam_captions'][i]}",
        fontsize=8,
        loc="left",
    )
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 3. Sentiment of unseen words, read letter by letter
# The VADER lexicon: 7,500 words, emoticons and slang, each rated by ten people from -4 to
# +4. A fifth of the tokens is held out; a bidirectional LSTM reads each token's characters
# (padded batches, `length=`) and predicts the mean rating. The baseline is ridge regression
# (and logistic regression for the sign) on character 1- to 5-gram features. Many held-out
# words have a relative in training ("abandoned" / "abandon"); the last three columns score
# only those whose first five characters start no training token.

# %%
sent_config = sentiment.Config(
    hidden_size=8 if QUICK else 32,
    num_steps=4 if QUICK else 800,
    eval_every=2 if QUICK else 200,
    cv_folds=2 if QUICK else 5,
)
split = sentiment.split_lexicon(sent_config.test_share, sent_config.seed)
sent = sentiment.baselines(split, sent_config.seed, sent_config.cv_folds)

# %%
sent["rnn"] = sentiment.train_and_predict(sent_config, split, jax.random.PRNGKey(0), progress=False)
table = sentiment.score_table(split, sent)
print(sentiment.summary_tables(sent_config, split, sent, table))
print("\n".join(sentiment.verdict(table)))

fig, axes = plt.subplots(1, 2, figsize=(8, 3.8), sharey=True)
for ax, (name, predicted) in zip(
    axes,
    (
        ("character BiLSTM", sent["rnn"]["predicted"]),
        ("char n-gram ridge", sent["ngram"]["predicted"]),
    ),
):
    ax.scatter(split.test_y, predicted, s=3, alpha=0.4)
    ax.plot([-4, 4], [-4, 4], "k:", lw=1)
    ax.set_title(name)
    ax.set_xlabel("mean human rating")
axes[0].set_ylabel("predicted rating")
plt.show()

# %%
worst = np.argsort(-np.abs(sent["rnn"]["predicted"] - split.test_y))[:8]
for i in worst:
    print(
        f"{split.test_tokens[i]:>16}  human {split.test_y[i]:+.1f}   BiLSTM "
        f"{sent['rnn']['predicted'][i]:+.1f}   n-gram {sent['ngram']['predicted'][i]:+.1f}"
    )

# %% [markdown]
# The largest errors: a suffix that reverses the stem ("terrorless", "offenseless") or
# emoticons whose characters say little ("</3", a broken heart). Neither model sees
# meaning beyond spelling; on tokens whose start no training token shares, both are far
# from the raters (last three columns above).
#
# ## 4. Reading lines of handwritten digits with CTC
# Lines of one to four digit images, each shifted by a random gap, read column by column by
# a bidirectional LSTM trained with CTC on the digit string alone (no positions). Best-path
# decoding merges repeats and drops blanks; prefix beam search ranks labellings. The
# baseline is told where each digit is.

# %%
ctc_config = handwriting_ctc.Config(
    max_digits=4,
    hidden_size=8 if QUICK else 32,
    num_steps=4 if QUICK else 400,
    eval_every=2 if QUICK else 100,
    num_test_lines=50 if QUICK else 200,
)
lines = jax.jit(handwriting_ctc.make_lines, static_argnums=(3, 4))(
    jax.random.PRNGKey(1),
    digits["test_images"],
    digits["test_labels"],
    ctc_config.num_test_lines,
    ctc_config,
)
ctc = {
    "segmented": handwriting_ctc.segmented_classifier(digits, lines),
    "rnn": handwriting_ctc.train_and_read(
        ctc_config, digits, lines, jax.random.PRNGKey(2), progress=False
    ),
    "num_test_images": len(digits["test_labels"]),
    "num_train_images": len(digits["train_labels"]),
}
print(handwriting_ctc.summary_tables(ctc_config, ctc))
print("\n".join(handwriting_ctc.verdict(ctc_config, ctc)))

example = ctc["rnn"]["example"]
fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 4), sharex=True)
top.imshow(np.asarray(example["frames"]).T, cmap="gray_r", aspect="auto")
top.set_title(
    f"held-out line {''.join(str(d - 1) for d in example['truth'])}, read "
    f"{''.join(str(d - 1) for d in example['greedy'])}"
)
probs = np.asarray(example["probs"])
bottom.plot(probs[:, 0], "k:", label="blank")
for d in range(10):
    if probs[:, d + 1].max() > 0.3:
        bottom.plot(probs[:, d + 1], label=str(d))
bottom.set_xlabel("frame (column)")
bottom.set_ylabel("p")
bottom.legend(fontsize=7, ncol=6)
plt.show()

# %% [markdown]
# The per-frame outputs are spikes: one frame per digit carries it, the blank fills the
# rest, the pattern CTC training produces (Graves et al. 2006, fig. 1).
#
# ## 5. Translation with attention
# English number words to German (`num2words`, inside its wheel): "four hundred and
# twenty-one" → "vierhunderteinundzwanzig". German reverses the units and tens and writes a
# number as one word, so the decoder must find, for each German piece, the English word it
# comes from: the job attention does. The held-out numbers are never trained on. An
# encoder-decoder (`rnnjax.encoder_decoder`: bidirectional LSTM encoder, LSTM decoder) is
# trained without attention and with Luong's multiplicative attention, from the same initial
# encoder and the same batches, and scored by exact match per source length.

# %%
tr_config = translation.Config(
    max_digits=3 if QUICK else 9,
    num_test=30 if QUICK else 450,
    pool_per_digit=40 if QUICK else 4000,
    models=("none", "luong"),
    hidden_size=8 if QUICK else 48,
    num_steps=4 if QUICK else 400,
    eval_every=2 if QUICK else 100,
)
vocab, tr_test, tr_pools = translation.make_data(tr_config)
tr_results = {
    name: translation.train_and_translate(
        name, tr_config, vocab, tr_pools, tr_test, jax.random.PRNGKey(1), progress=False
    )
    for name in tr_config.models
}
print(
    f"{sum(len(p.numbers) for p in tr_pools):,} training numbers, {len(tr_test.numbers)} held out"
)
print("source length (words) | count | " + " | ".join(tr_config.models))
for bucket, cell in tr_results["none"]["by_source_length"].items():
    accuracies = [tr_results[m]["by_source_length"][bucket]["exact_match"] for m in tr_results]
    print(f"{bucket:>6} | {cell['count']:>4} | " + " | ".join(f"{a:.3f}" for a in accuracies))

fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
for name, r in tr_results.items():
    buckets = list(r["by_source_length"])
    left.plot(
        buckets,
        [r["by_source_length"][b]["exact_match"] for b in buckets],
        "o-",
        label="no attention" if name == "none" else f"{name} attention",
    )
left.set_xlabel("source length (English words)")
left.set_ylabel("held-out exact match")
left.set_ylim(0, 1.02)
left.legend()
example = tr_results["luong"]["attention_example"]
right.imshow(np.asarray(example["weights"]), cmap="gray_r", vmin=0, vmax=1, aspect="auto")
right.set_xticks(range(len(example["source"])), example["source"], rotation=60, fontsize=8)
right.set_yticks(
    range(len(example["output"])),
    [repr(p) if p == " " else p for p in example["output"]],
    fontsize=8,
)
right.set_title(f"Luong attention while translating {example['number']:,}", fontsize=9)
plt.show()

# %% [markdown]
# Without attention the decoder must carry the whole number in one vector, and its exact
# match falls as the source grows, from 0.95 at 4-6 words to none of the 33 numbers of
# 16-17 words; with attention every bucket above three words is at 0.97 or more. The
# attention matrix (one row per German piece produced, one column per English word) steps
# back where German reverses the order: `sieben` reads "seven" before `und zwanzig` reads
# "twenty", and `acht und achtzig` reads "eight" then "eighty". Part of the gap is speed
# of learning (400 steps; the model without attention is still improving). The script
# (`experiments/translation.py`, quick preset: 64 units, Bahdanau as well, 1083 held-out
# numbers) gives the numbers in `docs/applications.md`.
