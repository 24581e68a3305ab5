"""clamp_training import-bags: plain `ros2 bag record` bags (MCAP / sqlite3) -> the same dataset as recorder bags."""

from __future__ import annotations

import json

import numpy as np
import pytest
from clamp_core import rig
from clamp_core.episode_bag import EpisodeReader, make_typestore
from clamp_training.commands.import_bags import main
from clamp_training.convert import ConvertOptions, convert
from clamp_training.dataset import open_episode
from clamp_training.import_bags import ImportBagError, import_bags
from clamp_training.synthetic import write_synthetic_episode


def _plain_bag(episode: str, out, storage: str = "mcap", drop=(), version: int = 9):
    """What `ros2 bag record` of the robot's topics leaves: the episode's messages, no episode.yaml."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    store = make_typestore()
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    conns = {}
    with Writer(out, version=version, storage_plugin=plugin) as w:
        for topic, msgtype, t, data in EpisodeReader(episode).raw_messages():
            if topic in drop:
                continue
            if topic not in conns:
                conns[topic] = w.add_connection(topic, msgtype, typestore=store)
            w.write(conns[topic], t, bytes(data))
    return out


@pytest.fixture(scope="module")
def episode(tmp_path_factory):
    root = tmp_path_factory.mktemp("import")
    return write_synthetic_episode(root / "ep", duration_s=4.0, seed=3, image_size=(48, 64))


@pytest.fixture(scope="module")
def short_episode(tmp_path_factory):
    """2 s: the comparison below converts it twice (rendering the views is most of the time); the 4 s
    `episode` is for the split at 2 s."""
    root = tmp_path_factory.mktemp("import_short")
    return write_synthetic_episode(root / "ep", duration_s=2.0, seed=3, image_size=(48, 64))


def test_plain_mcap_bag_converts_like_the_recorder_episode(short_episode, tmp_path):
    episode = short_episode
    plain = _plain_bag(episode, tmp_path / "demo_mcap")
    doc = import_bags([plain], tmp_path / "ds", "put the cube in the bin", [False], progress=False)
    ref = convert([episode], tmp_path / "ref", ConvertOptions(), progress=False)
    (ep,) = doc["episodes"]
    assert ep["task"] == "put the cube in the bin" and ep["success"] is False and ep["source"] == "teleop"
    assert ep["steps"] == ref["episodes"][0]["steps"]
    got = open_episode(tmp_path / "ds" / "episodes" / f"{ep['name']}.zarr")
    want = open_episode(tmp_path / "ref" / "episodes" / f"{ref['episodes'][0]['name']}.zarr")
    # the same bytes went in, through the same conversion: identical views, states and actions
    for key in ("views", "state", "action"):
        np.testing.assert_array_equal(np.asarray(got[key]), np.asarray(want[key]))
    meta = EpisodeReader(tmp_path / "ds_episodes" / "demo_mcap").metadata
    assert meta["extras"]["imported_from"] == str(plain) and meta["status"] == "complete"


def test_one_long_sqlite3_bag_split_at_given_times(episode, tmp_path, capsys):
    plain = _plain_bag(episode, tmp_path / "long", storage="sqlite3", version=8)
    rc = main(
        [str(plain), "--out", str(tmp_path / "ds"), "--task", "transfer the cube", "--success", "true,false"]
        + ["--split", "0:2", "--split", "2:4", "--no-views", "--rgb-scale", "0"]
    )
    assert rc == 0, capsys.readouterr().err
    doc = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    assert [e["success"] for e in doc["episodes"]] == [True, False]
    steps = [e["steps"] for e in doc["episodes"]]
    assert all(90 <= s <= 101 for s in steps), steps  # ~2 s each at 50 Hz
    for i, (a, b) in enumerate(((0, 2), (2, 4))):
        r = EpisodeReader(tmp_path / "ds_episodes" / f"long_{i:02d}")
        js = r.topics()[rig.joint_states_topic("follower_left")]
        assert (js.last_ns - js.first_ns) / 1e9 == pytest.approx(b - a, abs=0.05)
        assert r.topics()["/tf_static"].count >= 1  # repeated at the segment's start: each episode stands alone


def test_a_bag_lacking_a_topic_is_refused_naming_it_and_its_publisher(episode, tmp_path, capsys):
    plain = _plain_bag(episode, tmp_path / "nolead", drop=(rig.joint_states_topic("leader_left"), "/tf_static"))
    with pytest.raises(ImportBagError) as err:
        import_bags([plain], tmp_path / "ds", "t", [True], progress=False)
    text = str(err.value)
    assert "/leader_left/joint_states: published by xs_sdk of the leader arm leader_left" in text
    assert "/tf_static: published by the static transforms" in text
    assert not (tmp_path / "ds_episodes").exists()  # refused before anything was written
    rc = main([str(plain), "--out", str(tmp_path / "ds"), "--task", "t", "--success", "maybe"])
    assert rc == 1 and "--success 'maybe'" in capsys.readouterr().err
    rc = main([str(plain), "--out", str(tmp_path / "x"), "--task", "t", "--split", "5"])
    assert rc == 1 and "START:END" in capsys.readouterr().err
