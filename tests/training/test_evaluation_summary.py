"""The in-process evaluator's summary: success counts and the steps to a settled success."""

import pytest
from clamp_training.evaluation import EpisodeReport, summarize, wilson_interval


def _report(seed: int, success: bool, success_step: int | None) -> EpisodeReport:
    r = EpisodeReport("place_cube", seed, success, 1.0 if success else 0.5, 553, success_step)
    r.command_ticks = 553
    return r


def test_summary_counts_successes_and_the_median_steps_to_them():
    reports = [_report(0, True, 400), _report(1, False, None), _report(2, True, 420), _report(3, True, 500)]
    s = summarize("place_cube", reports)
    assert (s["successes"], s["episodes"]) == (3, 4)
    assert s["success_step_median"] == 420.0  # failed episodes do not count
    assert [e["success_step"] for e in s["per_episode"]] == [400, None, 420, 500]


def test_summary_without_a_success_has_no_median():
    assert summarize("place_cube", [_report(0, False, None)])["success_step_median"] is None


def test_wilson_interval_of_typical_evaluations():
    # reference values of the Wilson score interval (z = 1.96)
    assert wilson_interval(28, 40) == pytest.approx((0.546, 0.819), abs=1e-3)
    assert wilson_interval(0, 20) == pytest.approx((0.0, 0.161), abs=1e-3)  # not empty at 0/n
    assert wilson_interval(20, 20) == pytest.approx((0.839, 1.0), abs=1e-3)
    assert summarize("place_cube", [_report(0, True, 400), _report(1, False, None)])["success_ci95"] == pytest.approx(
        [0.095, 0.905], abs=1e-3
    )
