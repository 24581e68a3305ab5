"""Replay an episode bag into the live stack, with /clock, and optionally score the policy open loop.

    python -m clamp_bringup.replay BAG [--rate R] [--topics T ...] [--no-clock] [--loop]
                                       [--eval] [--checkpoint DIR] [--report out.json] [--plot out.png]

Messages are published unchanged (serialised bytes from the bag) at their bag times scaled by
1/R; /clock carries bag time, so nodes with use_sim_time run on recorded time. /tf_static is
published transient-local like tf2's static broadcaster.

--eval collects the chunks on rig.ACTION_CHUNK_TOPIC that a running policy publishes from the
replayed observations and compares them with the recorded actions (the leader joint states
mapped with the bag's action_source): mean absolute error per joint and per chunk step.
--checkpoint DIR starts the perception and inference nodes of the sim graph in this process with
that checkpoint (implies --eval).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np
from clamp_core import rig
from clamp_core.episode_bag import EpisodeReader
from clamp_core.ros import duration_to_s

# ---------------------------------------------------------------------------- open-loop scoring


def episode_actions(reader: EpisodeReader) -> tuple[np.ndarray, np.ndarray]:
    """(t_ns[N], actions[N, 14]) from the leader joint states, gripper mapped per action_source."""
    src = reader.metadata.get("action_source", "leader_joint_states/leader_gripper")
    gripper = rig.FOLLOWER_GRIPPER if src.endswith("follower_gripper") else rig.LEADER_GRIPPER
    topics = {rig.joint_states_topic(a): a for a in rig.LEADERS}
    latest: dict[str, dict[str, float]] = {}
    times, actions = [], []
    for m in reader.messages(list(topics)):
        latest[topics[m.topic]] = dict(zip(m.msg.name, m.msg.position, strict=False))
        if len(latest) == 2:
            times.append(m.stamp_ns)
            actions.append(rig.state_from_joint_states(latest, rig.LEADERS, gripper))
    if not times:
        raise ValueError(f"{reader.bag_dir} has no leader joint states ({list(topics)}): no recorded actions")
    return np.asarray(times, dtype=np.int64), np.asarray(actions)


def open_loop_error(chunks: list[tuple[int, np.ndarray, np.ndarray]], t_ns: np.ndarray, actions: np.ndarray) -> dict:
    """Compare policy chunks with recorded actions.

    chunks: (observation stamp ns, offsets s [K], chunk [K, 14]); each point is compared with the
    recorded action linearly interpolated at stamp + offset (points past the episode are skipped).
    """
    if not chunks:
        raise ValueError("no action chunks to score: is a policy running on the replayed data?")
    t = (t_ns - t_ns[0]) * 1e-9
    abs_err: list[np.ndarray] = []
    steps: list[int] = []
    for stamp, offsets, chunk in chunks:
        tq = (stamp - t_ns[0]) * 1e-9 + np.asarray(offsets)
        ok = (tq >= t[0]) & (tq <= t[-1])
        if not ok.any():
            continue
        ref = np.stack([np.interp(tq[ok], t, actions[:, j]) for j in range(actions.shape[1])], axis=1)
        abs_err.append(np.abs(np.asarray(chunk)[ok] - ref))
        steps.extend(np.flatnonzero(ok).tolist())
    if not abs_err:
        raise ValueError("no chunk overlaps the recorded episode in time (check the stamps / use_sim_time)")
    err = np.concatenate(abs_err)
    steps_arr = np.asarray(steps)
    per_step = [float(err[steps_arr == k].mean()) for k in range(int(steps_arr.max()) + 1) if (steps_arr == k).any()]
    return {
        "chunks": len(abs_err),
        "mae": float(err.mean()),
        "mae_per_joint": {n: float(v) for n, v in zip(rig.ACTION_NAMES, err.mean(axis=0), strict=False)},
        "mae_per_step": per_step,
    }


def plot_report(report: dict, path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.5))
    a.bar(range(len(report["mae_per_joint"])), list(report["mae_per_joint"].values()))
    a.set_xticks(range(len(report["mae_per_joint"])), list(report["mae_per_joint"]), rotation=70, fontsize=7)
    a.set_ylabel("MAE (rad; gripper normalised)")
    b.plot(report["mae_per_step"])
    b.set_xlabel("chunk step")
    b.set_ylabel("MAE")
    fig.suptitle(f"open-loop error over {report['chunks']} chunks")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ------------------------------------------------------------------------------------- player
class LiveGraphError(RuntimeError):
    """The graph already has the publishers a replay would duplicate (a live robot or simulator)."""


def _wait_matched(pubs: dict, timeout: float) -> list[str]:
    """Wait until each publisher (topic -> publisher) has a subscriber, or `timeout`; the topics without."""
    deadline = time.monotonic() + timeout
    while True:
        lonely = sorted(t for t, p in pubs.items() if p.get_subscription_count() == 0)
        if not lonely or time.monotonic() >= deadline:
            return lonely
        time.sleep(0.05)


class BagPlayer:
    """Publishes a bag from a node: raw bytes per topic at bag time / rate, /clock first."""

    def __init__(self, node, reader: EpisodeReader, rate: float = 1.0, topics=None, clock: bool = True) -> None:
        from clamp_core.ros import latched_publisher_qos, msg_class
        from rosgraph_msgs.msg import Clock

        if rate <= 0:
            raise ValueError(f"--rate must be > 0, got {rate}")
        self.node, self.reader, self.rate = node, reader, float(rate)
        info = reader.topics()
        self.topics = [t for t in info if topics is None or t in topics]
        missing = sorted(set(topics or ()) - set(info))
        if missing:
            raise ValueError(f"topics {missing} are not in {reader.bag_dir}; it has {sorted(info)}")
        latched = latched_publisher_qos()
        self._pubs = {
            t: node.create_publisher(msg_class(info[t].msgtype), t, latched if t in LATCHED_TOPICS else 10)
            for t in self.topics
        }
        self._clock_pub = node.create_publisher(Clock, "/clock", 10) if clock else None
        self._Clock = Clock
        self.published = 0
        self.stop_event = threading.Event()

    def live_publishers(self) -> dict[str, list[str]]:
        """Topic -> the other nodes publishing it, for the topics this player would publish (plus the arm
        driver's state). Non-empty means a live robot (or simulator) graph: replaying would put recorded
        joint states, images and TF next to the real ones - and the arm driver would act on them."""
        me = (self.node.get_name(), self.node.get_namespace())
        out = {}
        for topic in [*self.topics, rig.DRIVER_STATE_TOPIC]:
            others = [
                f"{i.node_namespace.rstrip('/')}/{i.node_name}"
                for i in self.node.get_publishers_info_by_topic(topic)
                if (i.node_name, i.node_namespace) != me
            ]
            if others:
                out[topic] = sorted(set(others))
        return out

    def refuse_live_graph(self) -> None:
        """Raise LiveGraphError when a live graph publishes what this player would (call after discovery)."""
        live = self.live_publishers()
        if live:
            lines = "; ".join(f"{t} by {', '.join(n)}" for t, n in sorted(live.items()))
            raise LiveGraphError(
                f"refusing to replay into a live graph ({lines}). Stop the robot or simulator stack first "
                "(replay is for offline checks: perception/inference on recorded data), or select topics "
                "nobody publishes with --topics"
            )

    def wait_for_subscribers(self, timeout: float) -> list[str]:
        """Wait until every selected topic has a subscriber (or `timeout`); returns those still without."""
        return _wait_matched(self._pubs, timeout)

    def wait_for_consumers(self, nodes, timeout: float) -> list[str]:
        """Wait until the topics that `nodes` subscribe to (among the played ones, /clock included) are
        matched to this player; returns those still unmatched after `timeout`. Messages published
        before discovery has matched a subscription are lost: the start of the episode would be."""
        wanted = {s.topic_name for n in nodes for s in n.subscriptions}
        pubs = {t: p for t, p in self._pubs.items() if t in wanted}
        if self._clock_pub is not None and "/clock" in wanted:
            pubs["/clock"] = self._clock_pub
        return _wait_matched(pubs, timeout)

    def _publish_clock(self, t_ns: int) -> None:
        from builtin_interfaces.msg import Time

        msg = self._Clock(clock=Time(sec=int(t_ns // 1_000_000_000), nanosec=int(t_ns % 1_000_000_000)))
        self._clock_pub.publish(msg)

    def play(self) -> int:
        """Blocking: publish every selected message; returns how many were published."""
        t0_bag = None
        t0_wall = time.monotonic()
        last_clock = -1
        for topic, _msgtype, stamp, data in self.reader.raw_messages(self.topics):
            if self.stop_event.is_set():
                break
            if t0_bag is None:
                t0_bag = stamp
            delay = t0_wall + (stamp - t0_bag) * 1e-9 / self.rate - time.monotonic()
            if delay > 0 and self.stop_event.wait(delay):
                break
            if self._clock_pub is not None and stamp > last_clock:
                self._publish_clock(stamp)
                last_clock = stamp
            self._pubs[topic].publish(bytes(data))
            self.published += 1
        return self.published


class ChunkCollector:
    """Subscribes to rig.ACTION_CHUNK_TOPIC and keeps (stamp ns, offsets s, chunk[K,14])."""

    def __init__(self, node) -> None:
        from trajectory_msgs.msg import JointTrajectory

        self.chunks: list[tuple[int, np.ndarray, np.ndarray]] = []
        node.create_subscription(JointTrajectory, rig.ACTION_CHUNK_TOPIC, self._on_chunk, 10)

    def _on_chunk(self, msg) -> None:
        if not msg.points:
            return
        order = [list(msg.joint_names).index(n) for n in rig.ACTION_NAMES] if msg.joint_names else list(range(14))
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        offsets = np.array([duration_to_s(p.time_from_start) for p in msg.points])
        chunk = np.array([[p.positions[i] for i in order] for p in msg.points])
        self.chunks.append((stamp, offsets, chunk))


# published transient-local, as live: late joiners still get the static TF and the task
LATCHED_TOPICS = ("/tf_static", rig.TASK_TOPIC)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m clamp_bringup.replay", description=__doc__.split("\n")[0])
    ap.add_argument("bag", help="episode bag directory")
    ap.add_argument("--rate", type=float, default=1.0, help="playback speed factor")
    ap.add_argument("--topics", nargs="*", default=None, help="only these topics")
    ap.add_argument("--no-clock", action="store_true", help="do not publish /clock")
    ap.add_argument("--loop", action="store_true")
    ap.add_argument("--eval", action="store_true", help="score policy chunks against the recorded actions")
    ap.add_argument("--checkpoint", default="", help="start perception + inference here with this checkpoint")
    ap.add_argument("--report", default="", help="write the open-loop report (JSON) here")
    ap.add_argument("--plot", default="", help="write an open-loop error plot (PNG) here")
    ap.add_argument("--settle", type=float, default=2.0, help="seconds to wait for late chunks after the bag")
    ap.add_argument("--delay", type=float, default=1.0, help="seconds for DDS discovery before playing")
    ap.add_argument(
        "--wait-subscribers", type=float, default=0.0, metavar="S", help="wait up to S s for a subscriber per topic"
    )
    a = ap.parse_args(argv)

    import rclpy
    from clamp_core.ros import NodeExecutors
    from rclpy.node import Node
    from rclpy.signals import SignalHandlerOptions

    reader = EpisodeReader(a.bag)
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    node = Node("replay")
    player = BagPlayer(node, reader, a.rate, a.topics, clock=not a.no_clock)
    evaluate = a.eval or bool(a.checkpoint)
    collector = ChunkCollector(node) if evaluate else None
    # each node on its own single-threaded executor thread (as separate processes would be); one
    # thread pool for all would cost ~3x the CPU per message (clamp_core.ros.make_executor)
    executor = NodeExecutors(rclpy.utilities.get_default_context())
    executor.add_node(node)
    running = None
    if a.checkpoint:
        from clamp_bringup.graph import build_graph
        from clamp_bringup.runner import start_graph

        graph = build_graph("sim", "policy")
        running = start_graph(
            graph,
            context=rclpy.utilities.get_default_context(),
            executor=executor,
            only=("perception", "inference"),
            overrides={"inference": {"checkpoint": a.checkpoint}},
        )
        inference = running.nodes["inference"]
    refused = ""
    try:
        time.sleep(max(a.delay, 0.0))
        player.refuse_live_graph()  # never publish recorded data onto a live robot's topics
        if running is not None:  # the policy loads and warms up before the first observation arrives
            from clamp_policy.inference_node import wait_ready

            wait_ready(inference, 180.0)
            unmatched = player.wait_for_consumers(running.nodes.values(), 30.0)
            if unmatched:
                node.get_logger().warn(f"playing although discovery has not matched {unmatched} yet")
        if a.wait_subscribers > 0:
            lonely = player.wait_for_subscribers(a.wait_subscribers)
            if lonely:
                node.get_logger().warn(f"playing although nobody subscribes to {lonely}")
        while True:
            n = player.play()
            print(json.dumps({"replayed": n, "bag": str(a.bag), "rate": a.rate}), flush=True)
            if not a.loop or player.stop_event.is_set():
                break
    except KeyboardInterrupt:
        player.stop_event.set()
    except LiveGraphError as exc:
        refused = str(exc)
    if collector is not None and not refused:
        time.sleep(a.settle)
        t_ns, actions = episode_actions(reader)
        report = open_loop_error(collector.chunks, t_ns, actions)
        print(json.dumps({"open_loop": report}), flush=True)
        if a.report:
            Path(a.report).write_text(json.dumps(report, indent=2))
        if a.plot:
            plot_report(report, a.plot)
    if running is not None:
        for n in running.nodes.values():
            executor.remove_node(n)  # joins the node's thread: never destroyed under its executor
            n.destroy_node()
    executor.remove_node(node)
    executor.shutdown(timeout_sec=1.0)
    node.destroy_node()
    rclpy.shutdown()
    if refused:
        print(f"error: {refused}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
