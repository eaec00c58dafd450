"""rnnjax.runs: intervals against scipy and hand computations, verdicts, flags and the run directory."""

import dataclasses
import json
import math
import os
import time

import numpy as np
import pytest

from rnnjax._src import runs


@pytest.mark.parametrize("successes,trials", [(0, 6), (1, 6), (3, 6), (6, 6), (17, 40)])
def test_wilson_interval_matches_scipy(successes, trials):
    scipy_stats = pytest.importorskip("scipy.stats")
    ci = scipy_stats.binomtest(successes, trials).proportion_ci(0.95, method="wilson")
    z = float(scipy_stats.norm.ppf(0.975))
    got = runs.wilson_interval(successes, trials, z=z)
    assert got.estimate == pytest.approx(successes / trials)
    assert (got.low, got.high) == pytest.approx((ci.low, ci.high), abs=1e-12)


def test_wilson_interval_by_hand():
    # 2 of 6 with z = 2: center (1/3 + 4/12) / (1 + 4/6) = 0.4,
    # half 2 sqrt(2/9/6 + 4/144) / (5/3) = 2 sqrt(1/27 + 1/36) 3/5.
    got = runs.wilson_interval(2, 6, z=2.0)
    half = 2 * math.sqrt(1 / 27 + 1 / 36) * 3 / 5
    assert got == pytest.approx((1 / 3, 0.4 - half, 0.4 + half))


@pytest.mark.parametrize("successes,trials", [(1, 0), (-1, 3), (4, 3)])
def test_wilson_interval_refuses_impossible_counts(successes, trials):
    with pytest.raises(ValueError, match=r"trials must be >= 1|successes must be in"):
        runs.wilson_interval(successes, trials)


def test_mean_interval_is_two_standard_errors():
    x = np.array([1.0, 2.0, 4.0, 7.0])
    se = np.std(x, ddof=1) / 2.0
    assert runs.mean_interval(x) == pytest.approx((3.5, 3.5 - 2 * se, 3.5 + 2 * se))
    assert runs.mean_interval([5.0]) == (5.0, -math.inf, math.inf)
    with pytest.raises(ValueError, match="samples must be a non-empty array of finite"):
        runs.mean_interval([1.0, np.nan])


def test_difference_interval_by_newcombe():
    a, b = runs.Interval(0.5, 0.2, 0.7), runs.Interval(0.1, 0.05, 0.4)
    got = runs.difference_interval(a, b)
    assert got == pytest.approx((0.4, 0.4 - math.hypot(0.3, 0.3), 0.4 + math.hypot(0.2, 0.05)))
    # Two normal intervals: half-widths add in quadrature, as for a difference of means.
    got = runs.difference_interval(runs.Interval(3.0, 2.0, 4.0), runs.Interval(1.0, 0.0, 2.0))
    assert got == pytest.approx((2.0, 2.0 - math.sqrt(2), 2.0 + math.sqrt(2)))
    # An infinite estimate (every run diverged) is its own interval, not nan from inf - inf.
    inf = runs.Interval(math.inf, math.inf, math.inf)
    assert runs.difference_interval(inf, runs.Interval(1.0, 0.0, 2.0)) == (math.inf,) * 3
    assert runs.difference_interval(runs.Interval(1.0, 0.0, 2.0), inf) == (-math.inf,) * 3


def test_decide_is_inconclusive_when_the_interval_straddles_the_criterion():
    assert runs.decide(runs.Interval(0.8, 0.6, 0.9), 0.5) is True
    assert runs.decide(runs.Interval(0.2, 0.1, 0.4), 0.5) is False
    assert runs.decide(runs.Interval(0.5, 0.3, 0.7), 0.5) is None
    assert runs.decide(runs.Interval(0.2, 0.1, 0.4), 0.5, above=False) is True
    assert runs.decide(runs.Interval(0.8, 0.6, 0.9), 0.5, above=False) is False
    assert [runs.verdict_text(v) for v in (True, False, None)] == ["yes", "no", "inconclusive"]


def test_one_seed_of_six_no_longer_flips_the_verdict():
    # The row that flipped: clipped 2/6 vs unclipped 0/6 against "at least 0.5 above".
    # 3/6 and 2/6 give opposite point verdicts; both intervals straddle 0.5.
    for clipped in (2, 3):
        diff = runs.difference_interval(
            runs.wilson_interval(clipped, 6), runs.wilson_interval(0, 6)
        )
        assert runs.decide(diff, 0.5) is None
    # With 48 seeds a 0.5 difference is decided.
    diff = runs.difference_interval(runs.wilson_interval(40, 48), runs.wilson_interval(2, 48))
    assert runs.decide(diff, 0.5) is True


@dataclasses.dataclass(frozen=True)
class _Config:
    num_steps: int = runs.option(10, "steps")
    rates: tuple[float, ...] = runs.option((0.1, 0.2), "learning rates")
    name: str = runs.option("a", "a name, 100% free text")
    shared: bool = runs.option(False, "a switch")


_PRESETS = {"quick": {}, "tiny": {"num_steps": 2}, "on": {"shared": True}}


def test_parse_config_takes_the_preset_and_the_flags(tmp_path, capsys):
    config, opts = runs.parse_config(
        _Config, _PRESETS, ["--preset", "tiny", "--rates", "1", "2", "3"], description="", name="x"
    )
    assert config == _Config(num_steps=2, rates=(1.0, 2.0, 3.0))
    assert opts.run_dir == os.path.join("runs", "x", "tiny")
    config, opts = runs.parse_config(
        _Config,
        _PRESETS,
        ["--num-steps", "7", "--run-dir", str(tmp_path)],
        description="",
        name="x",
    )
    assert config == _Config(num_steps=7) and opts.run_dir == str(tmp_path)
    # A bool field is a switch pair (bool("False") would be True).
    parse = lambda *argv: runs.parse_config(_Config, _PRESETS, list(argv), description="", name="x")
    assert parse("--shared")[0].shared is True
    assert parse("--preset", "on", "--no-shared")[0].shared is False
    assert parse("--preset", "on")[0].shared is True
    with pytest.raises(SystemExit):
        parse("--shared", "False")
    with pytest.raises(SystemExit):
        runs.parse_config(_Config, _PRESETS, ["--help"], description="", name="x")
    assert "--num-steps" in capsys.readouterr().out
    with pytest.raises(ValueError, match="num_steps must be > 0, got 0"):
        runs.check_positive(_Config(num_steps=0), "num_steps")
    with pytest.raises(ValueError, match=r"rates must be > 0, got \(0.1, -1.0\)"):
        runs.check_positive(_Config(rates=(0.1, -1.0)), "rates")


def test_run_dir_resumes_the_same_config_and_refuses_another(tmp_path):
    run_dir = runs.open_run_dir(tmp_path / "run", _Config())
    assert os.path.isdir(os.path.join(run_dir, "figures"))
    with open(os.path.join(run_dir, "config.json")) as f:
        assert json.load(f) == {"num_steps": 10, "rates": [0.1, 0.2], "name": "a", "shared": False}
    assert runs.open_run_dir(tmp_path / "run", _Config()) == run_dir
    with pytest.raises(ValueError, match=r"config differs .*\['num_steps'\]"):
        runs.open_run_dir(tmp_path / "run", _Config(num_steps=11))


def test_write_run_writes_results_and_summary(tmp_path):
    claim = runs.Claim("P 2000", "Fig. 1", "x grows", "x2", "x2.1 [1.9, 2.3]", None)
    runs.write_run(
        str(tmp_path),
        title="T",
        config=_Config(),
        results={"curve": np.array([1.0, np.inf])},
        summary=["Notes."],
        wall_time_s=1.5,
        claims=[claim._replace(differs="fewer steps"), claim._replace(differs="fewer steps")],
    )
    with open(tmp_path / "results.json") as f:
        record = json.load(f)
    assert record["curve"] == [1.0, "inf"] and record["wall_time_s"] == 1.5
    assert runs.Claim(**record["claims"][0]) == claim._replace(differs="fewer steps")
    text = (tmp_path / "summary.md").read_text()
    assert text.startswith("# T\n\n| where | claim |") and "| Fig. 1 | x grows |" in text
    assert text.count("- Fig. 1: fewer steps") == 1 and "Notes." in text
    assert "**inconclusive**" in text and '"num_steps": 10' in text


def test_markdown_table():
    assert (
        runs.markdown_table(["a", "b"], [[1.23456, "x|y"]])
        == "| a | b |\n|---|---|\n| 1.235 | x/y |"
    )


def test_finish_claims_writes_prints_and_returns_the_run(tmp_path, capsys):
    claim = runs.Claim("P 2000", "Fig. 1", "x grows", "x2", "x2.1 [1.9, 2.3]", True)
    out = runs.finish_claims(
        str(tmp_path),
        title="T",
        config=_Config(),
        results={"x": 2.1},
        summary=["Notes."],
        started=time.perf_counter() - 2.0,
        claims=[claim],
    )
    assert out == {"claims": [claim], "results": {"x": 2.1}, "run_dir": str(tmp_path)}
    with open(tmp_path / "results.json") as f:
        record = json.load(f)
    assert record["x"] == 2.1 and 2.0 <= record["wall_time_s"] < 60
    printed = capsys.readouterr().out
    assert "| Fig. 1 | x grows |" in printed and f"Run directory: {tmp_path}" in printed
