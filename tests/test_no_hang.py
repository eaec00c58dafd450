"""No jitted init deadlocks: every layer and model kind, many calls, in child processes (issue 26).

The children run with XLA's default flags (the suite's faster-compiling flags, conftest.py,
are removed), as a user's program runs. A child that does not finish in time is a failure
that carries the native stack of its threads (gdb or py-spy), never a stuck CI.
"""

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

PROGRAMS = pathlib.Path(__file__).with_name("init_programs.py")


def native_stacks(pid: int) -> str:
    """Returns every thread's native stack of process ``pid`` (gdb, else py-spy), or why not."""
    if shutil.which("gdb"):
        command = ["gdb", "-p", str(pid), "-batch", "-ex", "thread apply all bt"]
    elif shutil.which("py-spy"):
        command = ["py-spy", "dump", "--native", "--pid", str(pid)]
    else:
        return "(no gdb or py-spy on this machine to read the stacks)"
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=60).stdout
    except subprocess.TimeoutExpired:
        return f"({command[0]} did not answer in 60 s)"


def run_without_hanging(args: list[str], timeout: float) -> str:
    """Returns the child's stdout; fails the test with its stacks if it runs past ``timeout``."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.Popen(
        [sys.executable, str(PROGRAMS), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stacks = native_stacks(proc.pid)
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(
            f"{PROGRAMS.name} {' '.join(args)} still running after {timeout} s "
            f"(finished: {out.split()!r}). Native stacks:\n{stacks[-20000:]}"
        )
    assert proc.returncode == 0, err[-3000:]
    return out


def test_every_kind_of_jitted_init_runs_repeatedly():
    out = run_without_hanging(["--calls", "10"], timeout=400)
    assert [line.split()[:2] for line in out.splitlines()] == [
        [name, "ok"]
        for name in (
            "stack",
            "seeds_vmapped",
            "translation",
            "bahdanau",
            "language_model",
            "one_to_many",
            "many_to_one",
        )
    ]


@pytest.mark.slow
@pytest.mark.parametrize("run", range(5))
@pytest.mark.parametrize("program", ["stack", "seeds_vmapped", "translation"])
def test_the_reported_programs_run_100_times_in_fresh_processes(program, run):
    # The three programs of the report (issue 26), each 100 calls in a fresh process.
    out = run_without_hanging(["--calls", "100", program], timeout=600)
    assert out.split()[:2] == [program, "ok"]
