"""Tests of rnnjax.training and rnnjax.checkpoints on a tiny LSTM regression task.

References are independent of the code under test where possible: a Python loop of
``jax.jit(train_step)`` for ``run_steps``, separate un-vmapped runs for vmapped ones, an
uninterrupted run for a resumed one, a 1-device run (in a subprocess with 4 host devices)
for the sharded one, and a hand-written Adam for the train step.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rnnjax
from rnnjax import training
from rnnjax._src import checkpoints
from rnnjax._src.training import step as step_module

T, I, H, B = 6, 2, 8, 8  # sequence length, input size, hidden size, batch size
CELL = rnnjax.lstm(H, recurrent_init=jax.nn.initializers.normal(H**-0.5))  # cheap to compile


def init_params(key):
    k_rnn, k_out = jax.random.split(key)
    return {
        "rnn": CELL.init(k_rnn, I),
        "out": {"w": 0.1 * jax.random.normal(k_out, (H,)), "b": jnp.zeros(())},
    }


def predict(params, xs):
    (h, _), _ = rnnjax.scan(CELL, params["rnn"], xs)
    return h @ params["out"]["w"] + params["out"]["b"]


def loss_fn(params, batch, key):
    del key
    preds = jax.vmap(predict, (None, 0))(params, batch["x"])
    err = preds - batch["y"]
    return jnp.mean(err**2), {"mae": jnp.mean(jnp.abs(err))}


def batch_fn(key, step):
    """The task: predict the mean of the first input channel over the sequence."""
    del step
    x = jax.random.normal(key, (B, T, I))
    return {"x": x, "y": x[:, :, 0].mean(axis=1)}


def eval_fn(params, key):
    batch = batch_fn(key, 0)
    return {"loss": loss_fn(params, batch, key)[0]}


OPT = optax.chain(
    optax.clip_by_global_norm(1.0), optax.inject_hyperparams(optax.adam)(learning_rate=1e-2)
)
STEP = training.make_train_step(loss_fn, OPT)
TRAIN_KEYS = ("loss", "mae", "grad_norm", "param_norm", "learning_rate", "nonfinite")


@jax.jit
def _new_state(seed):
    k_param, k_train = jax.random.split(jax.random.key(seed))
    return training.init_train_state(k_train, init_params(k_param), OPT)


def new_state(seed=0):
    return _new_state(seed)


# A linear regression whose targets are NaN at step 7, for the non-finite tests (it compiles
# in a fraction of the LSTM's time).
def linear_loss(params, batch, key):
    del key
    return jnp.mean((batch["x"] @ params["w"] - batch["y"]) ** 2), {}


def nan_at_7(key, step):
    x = jax.random.normal(key, (B, 3))
    return {"x": x, "y": jnp.where(step == 7, jnp.nan, x @ jnp.array([1.0, -2.0, 0.5]))}


LINEAR_STEP = training.make_train_step(linear_loss, OPT)
LINEAR_STEP_SKIP = training.make_train_step(linear_loss, OPT, skip_nonfinite=True)


def linear_state(skip=False):
    return training.init_train_state(
        jax.random.key(0), {"w": jnp.zeros(3)}, OPT, skip_nonfinite=skip
    )


def fit(state, num_steps, fn=batch_fn, step=STEP, *, every=None, **kwargs):
    """Every test trains in chunks of 5 so that the jitted chunk is compiled once per worker.

    ``every``: a dict of the other Schedule fields (eval_every, checkpoint_every, ...).
    """
    schedule = training.Schedule(chunk_size=5, **(every or {}))
    return training.fit(step, state, fn, num_steps, schedule=schedule, progress=False, **kwargs)


def assert_trees_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def train_rows(history):
    return [{k: r[k] for k in TRAIN_KEYS} | {"step": r["step"]} for r in history if "loss" in r]


# ---------------------------------------------------------------------------------------------


def test_train_step_matches_hand_written_adam():
    opt = optax.adam(0.1)
    params = {"w": jnp.array([1.0, -2.0])}
    step = jax.jit(
        training.make_train_step(
            lambda p, b, k: (jnp.sum((p["w"] - b) ** 2), {}), opt, learning_rate=0.1
        )
    )
    state = training.init_train_state(jax.random.key(0), params, opt)
    target = jnp.array([0.5, 0.5])
    w, m, v = np.array([1.0, -2.0]), np.zeros(2), np.zeros(2)
    for t in range(1, 4):
        state, metrics = step(state, target)
        g = 2 * (w - 0.5)
        assert metrics["grad_norm"] == pytest.approx(np.linalg.norm(g), rel=1e-6)
        assert metrics["learning_rate"] == pytest.approx(0.1)
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g**2
        w = w - 0.1 * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
        np.testing.assert_allclose(state.params["w"], w, rtol=1e-5)
    assert int(state.step) == 3


def test_scheduled_learning_rate_is_recorded_as_the_rate_each_update_used():
    schedule = optax.linear_schedule(0.1, 0.01, transition_steps=8)
    for skip in (False, True):
        opt = optax.chain(
            optax.clip_by_global_norm(1.0),
            optax.inject_hyperparams(optax.sgd)(learning_rate=schedule),
        )
        step = training.make_train_step(linear_loss, opt, skip_nonfinite=skip)
        state = training.init_train_state(
            jax.random.key(0), {"w": jnp.zeros(3)}, opt, skip_nonfinite=skip
        )
        rows = fit(state, 10, nan_free, step).history
        np.testing.assert_allclose(
            [r["learning_rate"] for r in rows], [schedule(s) for s in range(10)], rtol=1e-6
        )
    # It is the rate the update used: SGD moves w by -lr * (clipped) gradient.
    w = np.zeros(3)
    for s in range(3):
        key = jax.random.split(jax.random.fold_in(jax.random.fold_in(state.key, 0), s))[0]
        batch = nan_free(key, s)
        g = np.asarray(jax.grad(lambda p: linear_loss(p, batch, None)[0])({"w": w})["w"])
        g = g * min(1.0, 1.0 / np.linalg.norm(g))
        w = w - rows[s]["learning_rate"] * g
    result = fit(state, 3, nan_free, step)
    np.testing.assert_allclose(result.state.params["w"], w, rtol=1e-5)


def test_several_injected_learning_rates_warn_unless_one_is_given():
    def opt(lr):
        return optax.inject_hyperparams(optax.sgd)(learning_rate=lr)

    both = optax.multi_transform({"a": opt(0.1), "b": opt(0.2)}, {"w": "a", "v": "b"})
    params = {"w": jnp.zeros(3), "v": jnp.zeros(())}
    batch = nan_free(jax.random.key(0), 0)
    state = training.init_train_state(jax.random.key(0), params, both)
    with pytest.warns(UserWarning, match=r"2 learning rates .*none is recorded"):
        _, metrics = training.make_train_step(linear_loss, both)(state, batch)
    assert "learning_rate" not in metrics
    _, metrics = training.make_train_step(linear_loss, both, learning_rate=0.3)(state, batch)
    assert metrics["learning_rate"] == pytest.approx(0.3)


def test_fit_equals_python_loop_of_train_steps_and_loss_falls():
    state = new_state()
    result = fit(state, 60)
    # The data of step s come from the state's key and s (documented in docs/training.md).
    step = jax.jit(
        lambda st: STEP(
            st,
            batch_fn(
                jax.random.split(jax.random.fold_in(jax.random.fold_in(st.key, 0), st.step))[0],
                st.step,
            ),
        )
    )
    ref, losses = state, []
    for _ in range(10):
        ref, m = step(ref)
        losses.append(float(m["loss"]))
    rows = train_rows(result.history)
    assert [r["step"] for r in rows] == list(range(60))
    np.testing.assert_allclose([r["loss"] for r in rows[:10]], losses, rtol=2e-5, atol=1e-6)
    assert rows[10]["param_norm"] == pytest.approx(float(optax.global_norm(ref.params)), rel=1e-5)
    late = np.mean([r["loss"] for r in rows[-10:]])
    assert late < 0.5 * np.mean(losses[:5])


def test_vmapped_seeds_and_learning_rates_equal_individual_runs():
    seeds, lrs = jnp.array([0, 1, 2]), jnp.array([1e-2, 3e-3, 1e-3])

    def init(seed, lr):
        state = new_state(seed)
        return state._replace(
            opt_state=optax.tree_utils.tree_set(state.opt_state, learning_rate=lr)
        )

    alone_states = [init(seed, lr) for seed, lr in zip(seeds, lrs)]
    together = fit(jax.tree.map(lambda *xs: jnp.stack(xs), *alone_states), 10).history
    losses = np.array([r["loss"] for r in train_rows(together)])  # (10 steps, 3 runs)
    for i in range(3):
        alone = train_rows(fit(alone_states[i], 10).history)
        np.testing.assert_allclose(losses[:, i], [r["loss"] for r in alone], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(
            [r["learning_rate"][i] for r in train_rows(together)], float(lrs[i]), rtol=1e-7
        )
        np.testing.assert_allclose(
            [r["param_norm"][i] for r in train_rows(together)],
            [r["param_norm"] for r in alone],
            rtol=1e-5,
        )
    assert not np.allclose(losses[:, 0], losses[:, 1])


def test_fit_writes_run_dir_and_resume_after_interrupt_is_bitwise_identical(tmp_path):
    config = {"seed": 0, "lr": 1e-2, "num_steps": 20}
    kwargs = dict(
        config=config,
        eval_fn=eval_fn,
        every=dict(checkpoint_every=5, eval_every=10, keep_checkpoints=2),
    )
    full = fit(new_state(), 20, run_dir=tmp_path / "full", **kwargs)

    def ctrl_c_at_15(state):
        if int(state.step) == 15:
            raise KeyboardInterrupt
        return {"step_seen": int(state.step)}

    part = tmp_path / "part"
    with pytest.raises(SystemExit) as exc:
        fit(new_state(), 20, run_dir=part, hooks=[ctrl_c_at_15], **kwargs)
    assert exc.value.code == 130
    assert checkpoints.checkpoint_steps(part / "checkpoints") == [10, 15]
    # Simulate a crash between logging rows and saving a checkpoint: drop checkpoint 15.
    import shutil

    shutil.rmtree(part / "checkpoints" / "15")
    resumed = fit(new_state(), 20, run_dir=part, **kwargs)

    assert_trees_equal(resumed.state, full.state)
    assert train_rows(training.read_metrics(part)) == train_rows(full.history)
    assert train_rows(resumed.history) == train_rows(full.history)
    assert [r["step"] for r in train_rows(full.history)] == list(range(20))
    evals = [r["step"] for r in full.history if "eval/loss" in r]
    assert evals == [0, 10, 20]
    assert checkpoints.checkpoint_steps(tmp_path / "full" / "checkpoints") == [15, 20]
    assert training.load_config(part) == config
    assert training.load_config(part / "config.yaml") == config
    summary = json.loads((part / "summary.json").read_text())
    assert summary["finished"] and summary["step"] == 20
    # Restoring a checkpoint gives the saved state, bitwise.
    restored = checkpoints.restore_checkpoint(part / "checkpoints", new_state(), step=20)
    assert_trees_equal(restored, full.state)
    with pytest.raises(ValueError, match="config differs"):
        fit(new_state(), 20, run_dir=part, **{**kwargs, "config": {"seed": 1}})


def test_hooks_are_recorded_at_their_steps_and_progress_bar_only_when_asked(capsys):
    hook = lambda s: {"w_out_norm": jnp.linalg.norm(s.params["out"]["w"])}
    result = fit(new_state(), 10, hooks=[hook])
    hooked = {r["step"]: r["w_out_norm"] for r in result.history if "w_out_norm" in r}
    assert sorted(hooked) == [0, 5, 10]
    assert hooked[10] == pytest.approx(float(jnp.linalg.norm(result.state.params["out"]["w"])))
    assert capsys.readouterr().err == ""
    training.fit(STEP, new_state(), batch_fn, 10, schedule=training.Schedule(5))  # not a TTY
    assert capsys.readouterr().err == ""
    training.fit(STEP, new_state(), batch_fn, 10, schedule=training.Schedule(5), progress=True)
    err = capsys.readouterr().err
    assert "10/10" in err and "loss=" in err and "step/s" in err


def test_nan_stops_with_message_and_keeps_last_good_checkpoint(tmp_path):
    with pytest.raises(training.NonFiniteError, match=r"loss is not finite at step 7") as exc:
        fit(
            linear_state(),
            20,
            nan_at_7,
            LINEAR_STEP,
            run_dir=tmp_path,
            every=dict(checkpoint_every=5),
        )
    assert exc.value.step == 7 and exc.value.metric == "loss"
    ckpt_dir = tmp_path / "checkpoints"
    assert str(ckpt_dir / "5") in str(exc.value)
    assert checkpoints.checkpoint_steps(ckpt_dir) == [5]
    rows = training.read_metrics(tmp_path)
    assert [r["step"] for r in rows] == list(range(8)) and np.isnan(rows[-1]["loss"])
    # The checkpoint is the state of a clean 5-step run, bitwise.
    restored = checkpoints.restore_checkpoint(ckpt_dir, linear_state())
    assert_trees_equal(restored, fit(linear_state(), 5, nan_at_7, LINEAR_STEP).state)
    assert np.all(np.isfinite(restored.params["w"]))


def test_skip_nonfinite_skips_and_counts():
    result = fit(linear_state(skip=True), 10, nan_at_7, LINEAR_STEP_SKIP)
    rows = [r for r in result.history if "loss" in r]
    assert [r["nonfinite"] for r in rows] == [int(s == 7) for s in range(10)]
    assert [r["nonfinite_count"] for r in rows] == [int(s >= 7) for s in range(10)]
    # The skipped update 7 leaves the parameters as they were; training goes on after it.
    assert rows[8]["param_norm"] == rows[7]["param_norm"] != rows[9]["param_norm"]
    assert all(np.isfinite(r["param_norm"]) for r in rows)
    # And the Adam state too: skipping equals training on the 9 finite batches alone.
    ref, step = linear_state(), jax.jit(LINEAR_STEP)
    for s in [*range(7), 8, 9]:
        ref, _ = step(ref, nan_at_7(step_module._step_keys(ref.key, jnp.int32(s))[0], s))
    np.testing.assert_allclose(result.state.params["w"], ref.params["w"], rtol=1e-6)
    with pytest.raises(TypeError, match="skip_nonfinite"):
        LINEAR_STEP_SKIP(linear_state(), nan_at_7(jax.random.key(0), 0))


def test_missing_and_corrupt_checkpoints_name_the_path(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(checkpoints.CheckpointNotFoundError, match=str(missing)):
        checkpoints.restore_checkpoint(missing, new_state())
    state = new_state()
    path = checkpoints.save_checkpoint(tmp_path / "ck", state)
    with pytest.raises(FileNotFoundError, match=r"ck/7.*available.*\[0\]"):
        checkpoints.restore_checkpoint(tmp_path / "ck", state, step=7)
    # A crash mid-write leaves only orbax's temporary directory, which is not a checkpoint.
    os.makedirs(tmp_path / "ck" / "3.orbax-checkpoint-tmp-123")
    assert checkpoints.checkpoint_steps(tmp_path / "ck") == [0]
    for root, _, files in os.walk(path):
        for name in files:
            if name.startswith("manifest"):
                with open(os.path.join(root, name), "wb") as f:
                    f.write(b"garbage")
    with pytest.raises(checkpoints.CheckpointError, match=f"{path} is corrupted"):
        checkpoints.restore_checkpoint(tmp_path / "ck", state)
    # fit refuses to start from a corrupted latest checkpoint, naming it.
    run = tmp_path / "run"
    checkpoints.save_checkpoint(run / "checkpoints", state)
    for root, _, files in os.walk(run / "checkpoints" / "0"):
        for name in files:
            if name.startswith("manifest"):
                with open(os.path.join(root, name), "wb") as f:
                    f.write(b"")
    with pytest.raises(checkpoints.CheckpointError, match=str(run / "checkpoints" / "0")):
        fit(state, 5, run_dir=run)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="chunk_size"):
        training.Schedule(chunk_size=0)
    with pytest.raises(TypeError, match="schedule"):
        training.fit(STEP, new_state(), batch_fn, 5, schedule=5)
    with pytest.raises(TypeError, match="TrainState"):
        training.fit(STEP, tuple(new_state()), batch_fn, 5)
    with pytest.raises(ValueError, match="skip_nonfinite"):
        training.make_train_step(loss_fn, OPT, skip_nonfinite=-1)
    with pytest.raises(TypeError, match="key"):
        training.init_train_state(jnp.zeros(3), {}, OPT)
    with pytest.raises(ValueError, match="divisible"):
        training.shard_batch(jnp.zeros((3, 2)), training.data_parallel_mesh(jax.devices() * 2))


SHARDED_SCRIPT = textwrap.dedent("""
    import os, sys, json
    # First: XLA ignores flags after a malformed token in the inherited XLA_FLAGS.
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4 " + os.environ.get("XLA_FLAGS", "")
    sys.path.insert(0, {test_dir!r})
    import jax, numpy as np
    import test_training as t
    from rnnjax import training
    assert len(jax.devices()) == 4
    r = t.fit(t.new_state(), 10, mesh=training.data_parallel_mesh())
    print("RESULT" + json.dumps({{
        "loss": [row["loss"] for row in t.train_rows(r.history)],
        "params": [np.asarray(x).tolist() for x in jax.tree.leaves(r.state.params)],
        "devices": len(r.state.params["out"]["w"].sharding.device_set),
    }}), flush=True)
    # Then a long run for the parent to stop with a real SIGINT (Ctrl-C).
    def started(state):
        print("STARTED", flush=True)
        return {{}}
    t.fit(t.new_state(), 10**7, run_dir={run_dir!r}, hooks=[started], every=dict(checkpoint_every=10**6))
""")


def test_four_device_sharded_run_equals_one_device_run_and_ctrl_c_saves(tmp_path):
    script = SHARDED_SCRIPT.format(test_dir=os.path.dirname(__file__), run_dir=str(tmp_path))
    proc = subprocess.Popen(  # started first: it compiles while this process does
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        one = fit(new_state(), 10, mesh=training.data_parallel_mesh(jax.devices()[:1]))
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("STARTED"):
                time.sleep(0.5)
                proc.send_signal(signal.SIGINT)
                break
        _stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr[-3000:]
    four = json.loads(next(x for x in lines if x.startswith("RESULT"))[len("RESULT") :])
    assert four["devices"] == 4
    np.testing.assert_allclose(
        four["loss"], [r["loss"] for r in train_rows(one.history)], rtol=1e-5, atol=1e-7
    )
    for a, b in zip(four["params"], jax.tree.leaves(one.state.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    # Ctrl-C saved the last completed chunk, named it, and left the metrics consistent with it.
    match = re.search(r"Interrupted at step (\d+): checkpoint of step \d+ saved to (\S+);", stderr)
    assert match, stderr[-3000:]
    step = int(match.group(1))
    assert step > 0 and match.group(2) == str(tmp_path / "checkpoints" / str(step))
    assert checkpoints.checkpoint_steps(tmp_path / "checkpoints") == [step]
    assert [r["step"] for r in training.read_metrics(tmp_path)] == list(range(step))


def test_early_stopping_stops_where_patience_says_and_keeps_the_best(tmp_path):
    # eval_fn reports a loss that falls to its minimum at step 10, then rises: with
    # evaluations every 5 steps and patience 2, training stops at step 20 (the evaluations
    # at 15 and 20 did not improve), and the best state is that of step 10.
    curve = {0: 5.0, 5: 3.0, 10: 1.0, 15: 2.0, 20: 1.5, 25: 0.5}

    def hook(state):
        return {"score": curve[int(state.step)]}

    rule = training.EarlyStopping(metric="score", patience=2)
    result = training.fit(
        LINEAR_STEP,
        linear_state(),
        nan_free,
        40,
        run_dir=tmp_path,
        hooks=[hook],
        schedule=training.Schedule(chunk_size=5, hook_every=5),
        progress=False,
        early_stopping=rule,
    )
    assert result.stopped_early and result.best_step == 10
    assert int(result.state.step) == 10  # restore_best
    assert max(r["step"] for r in result.history) == 20
    last = result.history[-1]
    assert last["step"] == 20 and last["score"] == 1.5 and last["train/step"] == 19
    assert last["train/loss"] == next(r["loss"] for r in result.history if r["step"] == 19)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["early_stopping"] == {"stopped_early": True, "best_step": 10, "best": 1.0}
    assert not summary["finished"]
    # the best checkpoint on disk is step 10's state
    best = rnnjax.checkpoints.restore_checkpoint(tmp_path / "best", linear_state())
    np.testing.assert_array_equal(best.params["w"], result.state.params["w"])
    # a metric that is never recorded is an error that names it
    with pytest.raises(ValueError, match=r"early_stopping watches 'eval/loss'.*\['score'\]"):
        training.fit(
            LINEAR_STEP,
            linear_state(),
            nan_free,
            10,
            hooks=[hook],
            progress=False,
            schedule=training.Schedule(chunk_size=5, hook_every=5),
            early_stopping=training.EarlyStopping(),
        )


def nan_free(key, step):
    x = jax.random.normal(key, (B, 3))
    return {"x": x, "y": x @ jnp.array([1.0, -2.0, 0.5])}


def tensorboard_points(directory):
    """Returns [(tag, step, value)] of every scalar in the event files of ``directory``."""
    import struct

    from tensorboardX.proto import event_pb2

    points = []
    for path in sorted(directory.iterdir()):
        data = path.read_bytes()
        # TFRecord framing: length (8 bytes), its CRC (4), the Event proto, its CRC (4)
        while len(data) >= 12:
            (n,) = struct.unpack("<Q", data[:8])
            if len(data) < 12 + n + 4:  # a record cut short by a killed writer
                break
            event = event_pb2.Event.FromString(data[12 : 12 + n])
            data = data[12 + n + 4 :]
            points += [(v.tag, event.step, v.simple_value) for v in event.summary.value]
    return points


def scalar_points(rows):
    """Returns [(tag, step, value)] that TensorBoard should hold for metrics.jsonl's ``rows``."""
    return [
        (k, row["step"], float(np.float32(v)))
        for row in rows
        for k, v in row.items()
        if k != "step" and not k.startswith("train/") and isinstance(v, float | int)
    ]


def test_tensorboard_event_files_hold_the_metrics(tmp_path):
    result = training.fit(
        LINEAR_STEP,
        linear_state(),
        nan_free,
        10,
        run_dir=tmp_path,
        schedule=training.Schedule(chunk_size=5),
        progress=False,
        tensorboard=True,
    )
    points = tensorboard_points(tmp_path / "tensorboard")
    assert sorted(points) == sorted(scalar_points(result.history))
    assert [step for tag, step, _ in points if tag == "loss"] == list(range(10))


KILLED_SCRIPT = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {test_dir!r})
    import test_training as t
    from rnnjax import training

    def hook(state):
        if int(state.step) == 15:
            time.sleep(1.0)  # tensorboardX's writer thread writes the rows of steps 10-14
        if int(state.step) == 20:  # before checkpoint 20 is saved: the latest stays 10
            print("READY", flush=True)
            time.sleep(600)
        return {{}}

    training.fit(
        t.LINEAR_STEP, t.linear_state(), t.nan_free, 30, run_dir={run_dir!r}, hooks=[hook],
        schedule=training.Schedule(chunk_size=5, checkpoint_every=10, hook_every=5),
        progress=False, tensorboard=True,
    )
""")


def test_resume_after_kill_logs_each_step_once_in_tensorboard(tmp_path, capsys):
    script = KILLED_SCRIPT.format(test_dir=os.path.dirname(__file__), run_dir=str(tmp_path))
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("READY"):
                break
        proc.send_signal(signal.SIGKILL)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL, stderr[-3000:]
    assert checkpoints.checkpoint_steps(tmp_path / "checkpoints") == [10]
    killed = tensorboard_points(tmp_path / "tensorboard")
    assert {step for tag, step, _ in killed if tag == "loss"} >= set(range(15))

    result = training.fit(
        LINEAR_STEP,
        linear_state(),
        nan_free,
        30,
        run_dir=tmp_path,
        schedule=training.Schedule(chunk_size=5, checkpoint_every=10),
        progress=False,
        tensorboard=True,
    )
    resumed_from = str(tmp_path / "checkpoints" / "10")
    assert (
        f"Resuming {tmp_path} from step 10 (checkpoint {resumed_from})." in capsys.readouterr().err
    )
    rows = training.read_metrics(tmp_path)
    assert rows == result.history
    assert [r["step"] for r in rows if "loss" in r] == list(range(30))
    points = tensorboard_points(tmp_path / "tensorboard")
    assert sorted(points) == sorted(scalar_points(rows))
    assert [step for tag, step, _ in points if tag == "loss"] == list(range(30))
    assert not [tag for tag, _, _ in points if tag.startswith("train/")]
