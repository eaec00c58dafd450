"""One fit over several processes (JAX's multi-controller runtime), with faults, on 127.0.0.1.

Two launches of ``python -m rnnjax.launch --num-processes 2 tests/process_worker.py``: two
processes of one CPU device each, connected by ``jax.distributed`` and gloo, training a tiny
LSTM with :func:`rnnjax.training.fit`. References are runs the multi-process code does not
touch: the same training in one process on two devices and on one device (equal to float32
round-off), an uninterrupted two-process run for the interrupted and resumed one (bitwise),
and the state the writing processes held for the checkpoint they wrote (bitwise).

The story, in one run directory (process_worker.first_launch, then second_launch): Ctrl-C
reaches process 1 alone at step 6 (both processes must stop there and save step 6); the next
run restores 6 and, while saving 8, process 1 is killed once it has written its part
(process 0 must stop with an error within the heartbeat timeout, and 8 must never become a
checkpoint); the relaunch resumes from 6 and finishes like the uninterrupted run; then process
1 hangs (SIGSTOP) and process 0, waiting for it in a collective, must be ended by JAX's runtime
within the heartbeat timeout.
"""

from __future__ import annotations

import glob
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from rnnjax import checkpoints, training

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "process_worker.py")
HEARTBEAT = 10  # seconds: --heartbeat-timeout of every launch


class Launch:
    """``python -m rnnjax.launch`` of the worker in a subprocess, its output in ``log``."""

    def __init__(self, log, out, *worker_args, processes=2, env=None, launch_args=()):
        self.log = str(log)
        cmd = [
            sys.executable,
            "-m",
            "rnnjax.launch",
            "--num-processes",
            str(processes),
            "--heartbeat-timeout",
            str(HEARTBEAT),
            "--log-dir",
            self.log + "-processes",
            *launch_args,
            WORKER,
            "--out",
            str(out),
            *worker_args,
        ]
        with open(self.log, "w") as f:
            self.proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)

    def wait(self, timeout=300) -> tuple[int, str]:
        """Returns (exit code, everything the launcher and its processes printed)."""
        try:
            code = self.proc.wait(timeout)
        finally:
            self.stop()
        text = pathlib.Path(self.log).read_text()
        for path in sorted(glob.glob(self.log + "-processes/*.log")):
            text += f"\n--- {path}\n" + pathlib.Path(path).read_text()
        return code, text

    def stop(self):
        """Ends the launch if it still runs: the launcher passes SIGTERM on to its processes."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def wait_for(path, proc, timeout=300):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert proc.poll() is None, f"the run ended before writing {path}"
        assert time.monotonic() < deadline, f"no {path} after {timeout} s"
        time.sleep(0.1)


def npz(path):
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def leaves(arrays):
    """Returns the TrainState leaves saved by process_worker, in order."""
    return [arrays[f"arr_{i}"] for i in range(sum(k.startswith("arr_") for k in arrays))]


def hang(story, launcher):
    """Returns (seconds from process 1's stop to process 0's end, whether process 0 returned
    from its collective), then kills the stopped process 1 so that the launch ends."""
    for p in (0, 1):
        wait_for(story / f"p{p}_hang.txt", launcher)
    pid0 = int((story / "p0_hang.txt").read_text().split()[0])
    pid1, t_stop = (story / "p1_hang.txt").read_text().split()
    deadline = time.monotonic() + 20 * HEARTBEAT
    while time.monotonic() < deadline:
        try:
            os.kill(pid0, 0)  # the launcher reaps its ended processes within 0.1 s
        except ProcessLookupError:
            break
        time.sleep(0.05)
    t_end = time.time()
    os.kill(int(pid1), signal.SIGKILL)
    return t_end - float(t_stop), os.path.exists(story / "p0_returned.txt")


def run_story(tmp):
    """Runs the story and the references; returns what the checks read."""
    story = tmp / "story"
    # The second launch reuses the programs the first compiled.
    env = {
        **os.environ,
        "JAX_COMPILATION_CACHE_DIR": str(tmp / "jax-cache"),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    }
    launches = []
    try:
        first = Launch(tmp / "first.log", story, "--launch", "first", env=env)
        two = Launch(
            tmp / "two_devices.log",
            tmp / "two_devices",
            processes=1,
            launch_args=("--cpu-devices", "2"),
        )
        launches += [first, two]
        sys.path.insert(0, HERE)
        import process_worker

        one = process_worker.train(
            str(tmp / "one_device"), mesh=training.data_parallel_mesh(jax.devices()[:1])
        )
        paused = story / "ctrl_c" / "p1_paused.txt"
        wait_for(paused, first.proc)
        os.kill(int(paused.read_text()), signal.SIGINT)  # process 1 alone
        (story / "ctrl_c" / "go.txt").touch()
        out = {"first": first.wait(), "two_devices": two.wait(), "one_device": one}
        checkpoint_dir = story / "run" / "checkpoints"
        out["after_kill"] = (
            checkpoints.checkpoint_steps(checkpoint_dir),
            sorted(os.listdir(checkpoint_dir)),
        )
        second = Launch(tmp / "second.log", story, "--launch", "second", env=env)
        launches.append(second)
        out["hang"] = hang(story, second.proc)
        out["second"] = second.wait()
    finally:
        for launch in launches:
            launch.stop()
    out["story"], out["tmp"] = story, tmp
    return out


def check_two_processes_equal_one_process_on_two_devices_and_on_one(runs):
    code, output = runs["first"]
    whole = runs["story"] / "uninterrupted"
    assert os.path.exists(whole / "p1_final.npz"), output[-5000:]
    code, output = runs["two_devices"]
    assert code == 0, output[-5000:]
    two = npz(runs["tmp"] / "two_devices" / "p0_final.npz")
    one = runs["one_device"]
    assert two["devices"] == 2 and len(one.state.step.sharding.device_set) == 1
    for p in (0, 1):  # each process holds the whole (replicated) state
        got = npz(whole / f"p{p}_final.npz")
        assert got["devices"] == 2 and not got["interrupted"]
        np.testing.assert_allclose(got["losses"], two["losses"], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(
            got["losses"], [r["loss"] for r in one.history if "loss" in r], rtol=1e-5, atol=1e-7
        )
        for a, b, c in zip(leaves(got), leaves(two), jax.tree.leaves(one.state), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
            np.testing.assert_allclose(a, np.asarray(c), rtol=1e-5, atol=1e-6)


def check_ctrl_c_in_one_process_stops_both_at_the_same_step(runs):
    _, output = runs["first"]
    ctrl_c = runs["story"] / "ctrl_c"
    for p in (0, 1):  # SIGINT reached process 1 only, in its hook at step 6
        final = npz(ctrl_c / f"p{p}_final.npz")
        assert final["interrupted"] and leaves(final)[-2] == 6, output[-5000:]
    assert output.count("Interrupted at step 6: checkpoint of step 6 saved to") == 1, output[-5000:]


def check_killed_process_stops_the_other_within_the_heartbeat_timeout(runs):
    code, output = runs["first"]
    assert os.path.exists(runs["story"] / "killed.txt"), output[-5000:]
    assert code == 128 + signal.SIGKILL, output[-5000:]
    # The launcher's report: process 0 ended by itself (its own error, exit code 1), soon.
    match = re.search(r"process 0: exit code 1 \(\+([\d.]+) s after process 1\)", output)
    assert match, output[-5000:]
    assert float(match.group(1)) < HEARTBEAT
    # It failed in the collective save of step 8, and said which process it is and what to do.
    assert re.search(r"could not write checkpoint \S+/checkpoints/8", output), output[-5000:]
    assert "this is process 0 of 2" in output and "run the same command again" in output


def check_uncommitted_checkpoint_is_ignored_and_relaunch_finishes_like_an_uninterrupted_run(runs):
    steps, names = runs["after_kill"]
    assert steps == [4, 6]  # the save of 8 did not complete in every process...
    assert any(n.startswith("8.orbax-checkpoint-tmp") for n in names), names  # ...it lies aside
    _code, _output = runs["second"]
    story = runs["story"]
    for p in (0, 1):
        assert (story / "resumed" / f"p{p}_start.txt").read_text() == "6"
        got = npz(story / "resumed" / f"p{p}_final.npz")
        want = npz(story / "uninterrupted" / f"p{p}_final.npz")
        for a, b in zip(leaves(got), leaves(want), strict=True):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(got["losses"], want["losses"])
    run_dir = story / "run"
    assert checkpoints.checkpoint_steps(run_dir / "checkpoints") == [6, 8, 12]
    assert [r["step"] for r in training.read_metrics(run_dir) if "loss" in r] == list(range(12))
    assert json.loads((run_dir / "summary.json").read_text())["finished"]


def check_checkpoint_written_by_two_processes_restores_bitwise_in_two(runs):
    # What each process held at step 6 when it saved, and what each restored from it.
    story = runs["story"]
    for p in (0, 1):
        assert (story / "killed" / f"p{p}_start.txt").read_text() == "6"
        saved = leaves(npz(story / "ctrl_c" / f"p{p}_step6.npz"))
        restored = leaves(npz(story / "killed" / f"p{p}_step6.npz"))
        for a, b in zip(restored, saved, strict=True):
            np.testing.assert_array_equal(a, b)


def check_processes_that_disagree_on_the_initial_state_are_told_so(runs):
    for p in (0, 1):
        message = (runs["story"] / f"p{p}_mistake.txt").read_text()
        assert "every process must pass the same state" in message
        assert "state: processes [1] differ from process 0" in message


def check_hung_process_stops_the_other_within_the_heartbeat_timeout(runs):
    code, output = runs["second"]
    waited, returned = runs["hang"]
    assert not returned, output[-5000:]
    # Process 1 sent no heartbeat after its stop, and the runtime ended process 0 within the
    # timeout (plus the time to notice: the runtime polls, the test polls; under 1 s here).
    assert "stopped sending heartbeats" in output, output[-5000:]
    assert waited < HEARTBEAT + 5, (waited, output[-5000:])
    assert code == 128 + signal.SIGABRT, output[-5000:]
    assert "process 0: killed by SIGABRT (first)" in output, output[-5000:]


CHECKS = [
    check_two_processes_equal_one_process_on_two_devices_and_on_one,
    check_ctrl_c_in_one_process_stops_both_at_the_same_step,
    check_killed_process_stops_the_other_within_the_heartbeat_timeout,
    check_uncommitted_checkpoint_is_ignored_and_relaunch_finishes_like_an_uninterrupted_run,
    check_checkpoint_written_by_two_processes_restores_bitwise_in_two,
    check_processes_that_disagree_on_the_initial_state_are_told_so,
    check_hung_process_stops_the_other_within_the_heartbeat_timeout,
]


def test_two_processes_through_the_story(tmp_path):
    """Runs the story once and every check on it (as tests on a module fixture, pytest-xdist
    would run the story again in each worker that draws one of them)."""
    runs = run_story(tmp_path)
    failed = []
    for check in CHECKS:
        try:
            check(runs)
        except AssertionError as err:
            failed.append(f"{check.__name__}: {err}")
    assert not failed, "\n\n".join(failed)


def test_bad_arguments_are_named_before_anything_starts(tmp_path):
    from rnnjax import launch

    with pytest.raises(SystemExit, match="--num-processes must be >= 1, got 0"):
        launch.main(["--num-processes", "0", WORKER])
    with pytest.raises(SystemExit, match=r"script must be a Python file, got 'no_such.py'"):
        launch.main(["--num-processes", "2", "no_such.py"])
    for name in ("heartbeat_timeout", "shutdown_timeout", "initialization_timeout"):
        with pytest.raises(ValueError, match=f"{name} must be a positive int, got 0"):
            training.initialize_processes("127.0.0.1:1", 2, 0, **{name: 0})
