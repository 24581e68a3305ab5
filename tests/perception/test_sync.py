"""FrameSynchronizer: grouping by stamp tolerance, optional cameras, time going backwards."""

from __future__ import annotations

import pytest
from clamp_perception.sync import FrameSynchronizer

MS = 1_000_000


def test_groups_within_tolerance_and_drops_consumed():
    s = FrameSynchronizer(["a", "b"], ["c"], tolerance_ns=10 * MS)
    s.add("a", 100 * MS, "a1")
    assert s.pop() is None and s.waiting_for() == ["b"]
    s.add("b", 135 * MS, "b-far")  # 35 ms away: not the same observation
    assert s.pop() is None
    s.add("a", 133 * MS, "a2")
    s.add("c", 128 * MS, "c2")
    g = s.pop()
    assert g.frames == {"a": "a2", "b": "b-far", "c": "c2"} and g.stamp_ns == 135 * MS
    assert g.stamps["c"] == 128 * MS and g.missing_optional == []
    assert s.pop() is None  # consumed; a1 was older and is gone too
    s.add("a", 170 * MS, "a3")
    s.add("b", 171 * MS, "b3")
    g = s.pop()
    assert g.missing_optional == ["c"] and set(g.frames) == {"a", "b"}


def test_newest_group_wins_and_time_reset_is_survived():
    s = FrameSynchronizer(["a", "b"], tolerance_ns=5 * MS)
    for t in (10, 20, 30):
        s.add("a", t * MS, f"a{t}")
        s.add("b", t * MS + MS, f"b{t}")
    assert s.pop().frames == {"a": "a30", "b": "b30"}
    s.add("a", 1 * MS, "reset")  # simulation restarted: stamps went backwards
    s.add("b", 1 * MS, "reset-b")
    assert s.pop().frames == {"a": "reset", "b": "reset-b"}


def test_bad_setup_is_named():
    with pytest.raises(ValueError, match="both required and optional"):
        FrameSynchronizer(["a"], ["a"])
    with pytest.raises(KeyError, match="camera 'z' is not synchronised"):
        FrameSynchronizer(["a"]).add("z", 0, None)
