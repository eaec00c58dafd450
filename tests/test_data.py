"""rnnjax.data: windows, horizons, padding and buckets against hand-written loops."""

import numpy as np
import pytest

from rnnjax._src import data

SERIES_SHAPES = [(17,), (17, 2)]


@pytest.mark.parametrize("shape", SERIES_SHAPES)
@pytest.mark.parametrize("length,stride", [(1, 1), (5, 1), (5, 3), (17, 2)])
def test_windows_equal_a_loop(shape, length, stride):
    series = np.arange(np.prod(shape), dtype=np.float64).reshape(shape)
    expected = np.stack(
        [series[s : s + length] for s in range(0, len(series) - length + 1, stride)]
    )
    got = data.windows(series, length, stride)
    np.testing.assert_array_equal(got, expected)
    got[0] = -1.0  # a copy, not a view
    assert series.min() == 0


def test_windows_errors_name_the_argument():
    with pytest.raises(ValueError, match="length must be at most the array's T=4 steps, got 5"):
        data.windows(np.zeros(4), 5)
    with pytest.raises(ValueError, match="stride must be a positive integer, got 0"):
        data.windows(np.zeros(4), 2, stride=0)


@pytest.mark.parametrize("shape", SERIES_SHAPES)
def test_ahead_equals_a_loop(shape):
    series = np.arange(1, np.prod(shape) + 1, dtype=np.float32).reshape(shape)
    horizon, available = 3, 12
    targets, valid = data.ahead(series, horizon, available=available)
    assert targets.shape == (len(series), horizon) + shape[1:] and targets.dtype == np.float32
    for t in range(len(series)):
        for k in range(1, horizon + 1):
            if t + k < len(series):
                np.testing.assert_array_equal(targets[t, k - 1], series[t + k])
            else:
                assert (targets[t, k - 1] == 0).all()
            assert valid[t, k - 1] == (t + k < available)
    assert data.ahead(series, horizon)[1].sum() == sum(
        t + k < len(series) for t in range(len(series)) for k in range(1, horizon + 1)
    )


@pytest.mark.parametrize("shape", SERIES_SHAPES)
@pytest.mark.parametrize("stride", [1, 2])
def test_forecast_pairs_equal_loops(shape, stride):
    series = np.arange(np.prod(shape), dtype=np.float64).reshape(shape)
    context, horizon = 4, 3
    starts = range(0, len(series) - context - horizon + 1, stride)
    inputs, last = data.forecast_pairs(series, context, horizon, stride=stride)
    np.testing.assert_array_equal(inputs, np.stack([series[s : s + context] for s in starts]))
    np.testing.assert_array_equal(
        last, np.stack([series[s + context : s + context + horizon] for s in starts])
    )
    inputs_mm, every = data.forecast_pairs(
        series, context, horizon, stride=stride, kind="many_to_many"
    )
    np.testing.assert_array_equal(inputs_mm, inputs)
    expected = np.stack(
        [
            np.stack(
                [
                    np.stack([series[s + i + k] for k in range(1, horizon + 1)])
                    for i in range(context)
                ]
            )
            for s in starts
        ]
    )
    np.testing.assert_array_equal(every, expected)
    np.testing.assert_array_equal(every[:, -1], last)  # the last step's targets are many-to-one's
    assert len(inputs) == (len(series) - context - horizon) // stride + 1


def test_forecast_pairs_errors_name_the_argument():
    with pytest.raises(
        ValueError, match="context \\+ horizon = 9 steps, got series of shape \\(8,\\)"
    ):
        data.forecast_pairs(np.zeros(8), 6, 3)
    with pytest.raises(ValueError, match="kind must be 'many_to_one' or 'many_to_many', got 'seq'"):
        data.forecast_pairs(np.zeros(8), 2, 3, kind="seq")


# ------------------------------------------------------------------------------- padding


def test_pad_features_zeroes_past_each_length():
    xs, lengths = data.pad([np.ones((2, 3)), 2 * np.ones((4, 3))])
    assert xs.shape == (2, 4, 3) and xs.dtype == np.float32 and lengths.tolist() == [2, 4]
    assert (xs[0, :2] == 1).all() and (xs[0, 2:] == 0).all() and (xs[1] == 2).all()
    with pytest.raises(ValueError, match="length must be >= the longest sequence"):
        data.pad([np.ones((5, 1))], length=3)
    with pytest.raises(ValueError, match=r"sequence 1 has steps of shape \(2,\), expected \(3,\)"):
        data.pad([np.ones((2, 3)), np.ones((2, 2))])


def test_pad_token_lists_equals_a_loop():
    tokens = [[5, 3, 9], [], [4], np.array([7, 7], np.int64)]
    xs, lengths = data.pad(tokens, length=5)
    expected = np.zeros((4, 5), np.int32)
    for i, seq in enumerate(tokens):
        for t, tok in enumerate(seq):
            expected[i, t] = tok
    assert xs.dtype == np.int32 and lengths.dtype == np.int32
    np.testing.assert_array_equal(xs, expected)
    assert lengths.tolist() == [3, 0, 1, 2]


# ------------------------------------------------------------------------------- buckets


def _lengths(n=300, seed=0):
    return np.random.default_rng(seed).integers(1, 61, size=n)


def test_bucket_batches_partition_the_examples_by_bucket():
    lengths = _lengths()
    bounds = [8, 16, 32, 64]
    batches = data.bucket_batches(lengths, 16, seed=3, boundaries=bounds)
    everyone = np.concatenate([b.indices for b in batches])
    np.testing.assert_array_equal(np.sort(everyone), np.arange(len(lengths)))  # each once
    lower = dict(zip(bounds, [0] + bounds[:-1]))
    for b in batches:
        assert b.length in bounds and 1 <= len(b.indices) <= 16
        assert ((lengths[b.indices] > lower[b.length]) & (lengths[b.indices] <= b.length)).all()
    for bound in bounds:  # per bucket, all batches full but at most one
        sizes = [len(b.indices) for b in batches if b.length == bound]
        in_bucket = sum((lengths > lower[bound]) & (lengths <= bound))
        assert sum(sizes) == in_bucket and sum(s < 16 for s in sizes) == (in_bucket % 16 > 0)
    dropped = data.bucket_batches(lengths, 16, seed=3, boundaries=bounds, drop_remainder=True)
    assert all(len(b.indices) == 16 for b in dropped)
    assert len(dropped) == sum(s // 16 for s in np.bincount(np.searchsorted(bounds, lengths)))


def test_bucket_batches_are_deterministic_given_the_seed():
    lengths = _lengths()
    first, again, other = (data.bucket_batches(lengths, 16, seed=s) for s in (1, 1, 2))
    assert [b.length for b in first] == [b.length for b in again]
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a.indices, b.indices)
    assert any(
        len(a.indices) != len(b.indices) or (a.indices != b.indices).any()
        for a, b in zip(first, other)
    )
    assert sorted({b.length for b in first}) == [1, 2, 4, 8, 16, 32, 64]  # powers of two by default


def test_bucketing_pads_less_than_random_batches():
    lengths = _lengths(seed=1)
    batch = 16

    def padded_fraction(groups):  # padded steps / all steps, each group padded to `pad_to`
        total = sum(len(idx) * pad_to for idx, pad_to in groups)
        return 1 - lengths.sum() / total

    perm = np.random.default_rng(0).permutation(len(lengths))
    random_batches = [(idx, lengths[idx].max()) for idx in np.array_split(perm, len(perm) // batch)]
    bucketed = [(b.indices, b.length) for b in data.bucket_batches(lengths, batch, seed=0)]
    # Uniform lengths 1..60: a random batch pads to about its maximum (~57), so about half is
    # padding; powers of two pad the upper buckets by a quarter on average.
    assert padded_fraction(random_batches) > 0.4
    assert padded_fraction(bucketed) < 0.3


def test_bucket_batches_errors_name_the_argument():
    with pytest.raises(
        ValueError, match=r"boundaries must reach the longest length 60, got \[8, 16\]"
    ):
        data.bucket_batches(np.array([3, 60]), 2, seed=0, boundaries=[8, 16])
    with pytest.raises(ValueError, match="boundaries must be increasing positive integers"):
        data.bucket_batches(np.array([3]), 2, seed=0, boundaries=[8, 4])
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        data.bucket_batches(np.array([3]), 0, seed=0)
