"""The in-process evaluator's summary: success counts and the steps to a settled success."""

from clamp_training.evaluation import EpisodeReport, summarize


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
