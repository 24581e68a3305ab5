"""Issue 15 ("day one on the real ALOHA"): ROS-free regression tests, one or more per finding.

Each test names its item; each failed on the code before the fix (see the issue's report).
"""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from clamp_bringup.arm_driver import ArmDriverCore
from clamp_bringup.graph import build_graph, realsense_spec
from clamp_bringup.teleop import TeleopCore
from clamp_core import rig, world
from clamp_core.profile import ProfileError, load_profile, safety_limits, workspace_guard
from clamp_core.safety import SafetyConfigError, SafetyLimiter, SafetyLimits, WorkspaceGuard

ALOHA = load_profile("aloha")


@pytest.fixture(autouse=True)
def _runtime_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CLAMP_RUNTIME_DIR", str(tmp_path / "runtime"))


def _core(**kw) -> ArmDriverCore:
    d = ALOHA["driver"]
    return ArmDriverCore(safety_limits(ALOHA), d["start_pose"], d["sleep_pose"], 0.5, 50.0, **kw)


def _ready(core: ArmDriverCore) -> ArmDriverCore:
    core.on_measured(core.start_pose)
    core.begin_start()
    while core.state != "ready":
        core.tick()
    return core


# ------------------------------------------------------------------------------------ item 1
@pytest.mark.parametrize("mode", ["policy", "arms"])
def test_item1_driver_waits_only_for_arms_the_mode_starts(mode):
    g = build_graph("aloha", mode)
    started = {inc.arguments["robot_name"] for inc in g.includes}
    assert started == set(rig.FOLLOWERS)
    # the driver must not wait for leader joint states nobody publishes in this mode
    assert g.node("arm_driver").parameters["leaders_to_start"] is False


@pytest.mark.parametrize("mode", ["teleop", "record"])
def test_item1_teleop_modes_start_the_leaders_the_driver_moves(mode):
    g = build_graph("aloha", mode)
    started = {inc.arguments["robot_name"] for inc in g.includes}
    assert started == set(rig.FOLLOWERS + rig.LEADERS)
    assert g.node("arm_driver").parameters["leaders_to_start"] is True


# ------------------------------------------------------------------------------------ item 2
def test_item2_every_arm_has_its_own_port_in_its_motor_config():
    g = build_graph("aloha", "teleop")
    ports = {}
    for inc in g.includes:
        cfg = yaml.safe_load(open(inc.arguments["motor_configs"], encoding="utf-8"))
        ports[inc.arguments["robot_name"]] = cfg["port"]
        assert cfg["joint_state_publisher"]["update_rate"] == int(ALOHA["joint_state_hz"])
        assert cfg["motors"]["gripper"]["ID"] in (8, 9)
    assert ports == {arm: f"/dev/ttyDXL_{arm}" for arm in rig.FOLLOWERS + rig.LEADERS}


def test_item2_shared_port_is_a_profile_error():
    raw = yaml.safe_load(open(ALOHA["path"], encoding="utf-8"))
    raw["arms"]["leader_left"]["port"] = raw["arms"]["follower_left"]["port"]
    with pytest.raises(ProfileError, match="own port"):
        load_profile(raw)


# ------------------------------------------------------------------------------------ item 4
def test_item4_serial_survives_launch_ros_yaml_typing():
    spec = realsense_spec("cam_high", ALOHA["cameras"]["cam_high"])
    value = spec.parameters["serial_no"]
    # launch_ros evaluates parameter strings as YAML: an all-digit serial would become an int
    assert isinstance(yaml.safe_load(value), str)
    assert value.lstrip("_") == str(ALOHA["cameras"]["cam_high"]["serial"])  # realsense strips the "_"


# ------------------------------------------------------------------------------------ item 5
def test_item5_driver_refuses_a_stream_that_does_not_start_at_the_arm():
    core = _ready(_core(engage_tolerance=0.1))
    stale = core.start_pose.copy()
    stale[0] += 0.8  # an executor still holding its pose from before a driver restart
    for k in range(10):
        assert core.command(stale, stamp=1.0 + 0.02 * k) is None
    assert core.rejections["not_at_arm"] == 10
    out = core.command(core.start_pose + 0.01, stamp=2.0)
    assert out is not None  # a stream from where the arm is engages


def test_item5_executor_stops_commanding_when_the_driver_is_not_ready_and_in_safe():
    from clamp_policy.executor import ChunkExecutor, ExecState, ExecutorConfig, make_chunk

    home = np.array(ALOHA["driver"]["start_pose"])
    ex = ChunkExecutor(ExecutorConfig(blend_s=0.0, safe_after_s=0.3), safety_limits(ALOHA))
    ex.update_driver_state("ready")
    t = 10.0
    ex.update_state(home, t)
    tfs = np.arange(50) * 0.02
    ex.submit(make_chunk(t, tfs, home + np.linspace(0, 0.3, 50)[:, None] * 0), now=t)
    for _ in range(30):
        ex.update_state(home, t)
        assert ex.tick(t) is not None
        t += 0.02
    ex.update_driver_state("moving_to_start")  # the driver restarted
    outs = []
    for _ in range(40):
        ex.update_state(home, t)
        outs.append(ex.tick(t))
        t += 0.02
    assert all(o is None for o in outs)  # nothing stale is sent to a restarting driver
    moved = home.copy()
    moved[0] -= 0.5  # the restarted driver left the arm elsewhere
    ex.update_driver_state("ready")
    ex.update_state(moved, t)
    out = ex.tick(t)
    assert ex.state == ExecState.SAFE  # HOLD outlasted safe_after_s while the driver was away
    assert out is None or np.abs(out - moved).max() < 1e-9


# ------------------------------------------------------------------------------------ item 6
def test_item6_future_chunk_rejected_and_normal_chunks_still_run():
    from clamp_policy.executor import ChunkExecutor, ExecState, ExecutorConfig, make_chunk

    home = np.array(ALOHA["driver"]["start_pose"])
    ex = ChunkExecutor(ExecutorConfig(blend_s=0.0), safety_limits(ALOHA))
    tfs = np.arange(50) * 0.02
    t = 10.0
    ex.update_state(home, t)
    r = ex.submit(make_chunk(t + 30.0, tfs, np.tile(home, (50, 1))), now=t)
    assert not r.accepted and r.reason == "future"
    assert ex.submit(make_chunk(t - 0.05, tfs, np.tile(home, (50, 1))), now=t).accepted
    ex.tick(t)
    assert ex.state == ExecState.RUNNING


def test_item6_clock_step_back_forgets_the_old_timeline_and_the_watchdog_still_fires():
    from clamp_policy.executor import ChunkExecutor, ExecState, ExecutorConfig, make_chunk

    home = np.array(ALOHA["driver"]["start_pose"])
    cfg = ExecutorConfig(blend_s=0.0, chunk_timeout_s=0.3)
    ex = ChunkExecutor(cfg, safety_limits(ALOHA))
    tfs = np.arange(50) * 0.02
    t = 100.0
    ex.update_state(home, t)
    ex.submit(make_chunk(t, tfs, np.tile(home, (50, 1))), now=t)
    ex.tick(t)
    assert ex.state == ExecState.RUNNING
    t = 0.0  # clamp_sim reset / a looped bag: time starts again
    ex.update_state(home, t)
    ex.tick(t)
    assert ex.clock_jumps == 1 and ex.state == ExecState.HOLD
    assert ex.submit(make_chunk(t, tfs, np.tile(home, (50, 1))), now=t).accepted  # not "out of order"
    for _ in range(5):
        ex.update_state(home, t)
        ex.tick(t)
        t += 0.02
    assert ex.state == ExecState.RUNNING
    while t < 1.0:  # no new chunk: the watchdog fires on the new time line
        ex.update_state(home, t)
        ex.tick(t)
        t += 0.02
    assert ex.state in (ExecState.HOLD, ExecState.SAFE) and ex.holds >= 2


def test_item6_sim_ticker_follows_a_clock_reset():
    import threading

    from clamp_policy.executor_node import SimTicker, TickStats

    ticks, cond = [], threading.Condition()

    def fn(t):
        with cond:
            ticks.append(round(t, 6))
            cond.notify_all()

    def feed(t):  # one /clock message, then wait for its tick (an event, not a time margin)
        ticker.on_clock(t)
        with cond:
            assert cond.wait_for(lambda: round(t, 6) in ticks, timeout=5.0), f"no tick at {t}: {ticks[-5:]}"

    ticker = SimTicker(0.02, fn, TickStats())
    ticker.start()
    try:
        for k in range(20):
            feed(10.0 + 0.02 * k)
        for k in range(20):  # clamp_sim reset: the clock starts again at 0
            feed(0.02 * k)
    finally:
        ticker.stop()
    assert ticks[-20:] == [round(0.02 * k, 6) for k in range(20)]


def test_item6_nan_stamp_is_a_chunk_error():
    from clamp_policy.executor import ChunkError, make_chunk

    with pytest.raises(ChunkError, match="finite"):
        make_chunk(float("nan"), np.arange(3) * 0.02, np.zeros((3, 14)))


# ------------------------------------------------------------------------------------ item 7
def test_item7_sleep_move_brakes_before_reversing_without_overshoot_beyond_the_stop():
    core = _ready(_core())
    v = core.limits.velocity
    t = 1.0
    target = core.start_pose.copy()
    for _ in range(40):  # moving the waist fast in + direction
        target[0] += 0.05
        core.command(target, stamp=t)
        t += 0.02
    p0, v0 = core.limiter.position, core.limiter.velocity
    assert v0[0] > 1.0
    core.begin_sleep()
    cmds = [p0]
    while core.state == "moving_to_sleep":
        cmds.append(core.tick())
    cmds = np.array(cmds)
    vel = np.diff(cmds, axis=0) / core.dt
    acc = np.diff(np.r_[[v0], vel], axis=0) / core.dt
    assert np.all(np.abs(vel) <= v + 1e-9)
    assert np.all(np.abs(acc) <= core.limits.acceleration * (1 + 1e-6) + 1e-6)  # no instant reversal
    stop = p0[0] + v0[0] ** 2 / (2 * core.limits.acceleration[0]) + v0[0] * core.dt
    assert cmds[:, 0].max() <= stop + 1e-9
    np.testing.assert_allclose(cmds[-1], core.sleep_pose, atol=1e-9)


def test_item7_a_command_after_a_gap_moves_one_tick_at_most():
    core = _ready(_core())
    core.command(core.start_pose, stamp=1.0)
    far = core.start_pose + 1.0
    out = core.command(far, stamp=1.5)  # 500 ms later
    assert np.all(np.abs(out - core.start_pose) <= core.limits.velocity * core.dt + 1e-9)


def test_issue14_driver_dt_comes_from_command_stamps_not_arrival():
    # jittered arrivals (the node's clock) must not change the step: the limiter uses stamps
    a, b = _ready(_core()), _ready(_core())
    target = a.start_pose.copy()
    t = 1.0
    for k in range(30):
        target[0] += 0.02  # 1 rad/s
        oa = a.command(target, stamp=t, now=100.0 + k * 0.02)
        ob = b.command(target, stamp=t, now=100.0 + k * 0.02 + (0.015 if k % 2 else -0.015))
        t += 0.02
        np.testing.assert_array_equal(oa, ob)


def test_item7_duplicate_and_old_stamps_are_refused():
    core = _ready(_core())
    assert core.command(core.start_pose, stamp=2.0) is not None
    assert core.command(core.start_pose, stamp=2.0) is None
    assert core.command(core.start_pose, stamp=1.0) is None
    assert core.command(core.start_pose, stamp=float("nan")) is None
    assert core.rejections == {"old_stamp": 2, "bad_stamp": 1}


# ------------------------------------------------------------------------------------ item 8
def test_item8_one_owner_per_mode_and_the_driver_refuses_the_rest():
    owners = {m: build_graph("aloha", m).node("arm_driver").parameters["command_owner"] for m in ("policy", "teleop")}
    assert owners == {"policy": rig.COMMAND_SOURCE_EXECUTOR, "teleop": rig.COMMAND_SOURCE_TELEOP}
    assert build_graph("aloha", "record").node("arm_driver").parameters["command_owner"] == rig.COMMAND_SOURCE_TELEOP
    arms = _ready(_core(owner=build_graph("aloha", "arms").node("arm_driver").parameters["command_owner"]))
    for k, source in enumerate((rig.COMMAND_SOURCE_OPERATOR, rig.COMMAND_SOURCE_CALIBRATION)):
        assert arms.command(arms.start_pose, stamp=1.0 + k, source=source) is not None
    assert arms.command(arms.start_pose, stamp=5.0, source=rig.COMMAND_SOURCE_EXECUTOR) is None
    core = _ready(_core(owner=rig.COMMAND_SOURCE_EXECUTOR))
    assert core.command(core.start_pose, stamp=1.0, source=rig.COMMAND_SOURCE_TELEOP) is None
    assert core.command(core.start_pose, stamp=1.1, source="") is None
    assert core.command(core.start_pose, stamp=1.2, source=rig.COMMAND_SOURCE_EXECUTOR) is not None
    assert core.rejections["not_owner"] == 2


# ------------------------------------------------------------------------------------ item 9
def test_item9_teleop_waits_for_a_ready_driver_and_stops_when_it_leaves():
    core = TeleopCore(safety_limits(ALOHA))
    here = np.array(ALOHA["driver"]["sleep_pose"])
    core.on_driver_state("moving_to_start")
    assert "not ready" in core.can_start()
    with pytest.raises(RuntimeError, match="not ready"):
        core.start(here)
    assert core.step(here + 0.3) is None
    core.on_driver_state("ready")
    core.start(here)
    assert core.step(here) is not None
    assert core.on_driver_state("moving_to_sleep") is True
    assert not core.active and core.step(here) is None


# ----------------------------------------------------------------------------------- item 10
def test_item10_start_from_outside_the_limits_never_jumps():
    core = _core()
    measured = np.array(core.sleep_pose)
    measured[1] = core.limits.lower[1] - 0.2  # shoulder resting past its (margin) limit
    measured[6] = 1.15  # gripper reads beyond fully open
    core.on_measured(measured)
    core.begin_start()
    cmds = [measured]
    while core.state == "moving_to_start":
        cmds.append(core.tick())
    cmds = np.array(cmds)
    assert np.all(np.abs(np.diff(cmds, axis=0)) <= core.limits.velocity * core.dt + 1e-9)
    np.testing.assert_allclose(cmds[-1], core.start_pose, atol=1e-9)
    # never further out than where it started
    assert np.all(cmds[:, 1] >= measured[1] - 1e-12) and np.all(cmds[:, 6] <= 1.15 + 1e-12)


def test_item10_limiter_seeded_outside_moves_back_in_at_the_velocity_limit():
    lim = SafetyLimiter(SafetyLimits.from_joint_limits())
    start = np.full(14, 0.5)
    start[1] = lim.limits.lower[1] - 0.5
    lim.reset(start)
    out = lim.limit(np.full(14, 0.5))
    assert abs(out[1] - start[1]) <= lim.limits.velocity[1] * lim.dt + 1e-12


# ----------------------------------------------------------------------------------- item 12
def test_item12_command_timeout_brakes_a_moving_arm_to_rest():
    core = _ready(_core(command_timeout_s=0.1))
    t, now = 1.0, 50.0
    target = core.start_pose.copy()
    for _ in range(40):
        target[0] += 0.04  # 2 rad/s
        core.command(target, stamp=t, now=now)
        t += 0.02
        now += 0.02
    assert core.tick(now) is None  # within the timeout: nothing from the driver
    v0, p_before = core.limiter.velocity[0], core.limiter.position[0]
    outs = []
    for _ in range(100):  # the executor died
        now += 0.02
        o = core.tick(now)
        if o is not None:
            outs.append(o)
    assert outs, "the driver did not brake"
    x = np.array([p0[0] for p0 in outs])
    vel = np.diff(np.r_[p_before, x]) / core.dt
    assert np.all(np.abs(np.diff(np.r_[v0, vel])) <= core.limits.acceleration[0] * core.dt + 1e-9)
    assert core.limiter.at_rest


# ----------------------------------------------------------------------------------- item 14
def test_item14_margins_shrink_the_hard_limits():
    hard = SafetyLimits.from_profile({})
    lim = safety_limits(ALOHA)
    arm = [i for i in range(14) if i not in (6, 13)]
    np.testing.assert_allclose(lim.lower[arm], hard.lower[arm] + 0.05)
    np.testing.assert_allclose(lim.upper[arm], hard.upper[arm] - 0.05)
    with pytest.raises(SafetyConfigError, match="no range"):
        SafetyLimits.from_profile({"margin": 5.0})


def test_item14_workspace_guard_table_and_arm_separation():
    guard = workspace_guard(ALOHA)
    start = np.array(ALOHA["driver"]["start_pose"])
    assert guard.violation(start) == ""
    down = start.copy()
    down[1], down[2], down[4] = 0.6, 0.3, 1.2  # shoulder forward, wrist down: fingers into the table
    assert "below the table" in guard.violation(down)
    meet = start.copy()
    meet[1], meet[2], meet[4] = 0.0, 0.0, 1.0  # both arms stretched to the middle of the table
    meet[8], meet[9], meet[11] = 0.0, 0.0, 1.0
    pts = guard.points(meet)
    assert np.linalg.norm(pts["follower_left"][1] - pts["follower_right"][1]) < 0.03
    assert "apart" in guard.violation(meet)
    with pytest.raises(SafetyConfigError, match="unknown workspace"):
        WorkspaceGuard.from_profile({"table": 0.0})


def test_item14_executor_holds_instead_of_entering_the_table():
    from clamp_policy.executor import ChunkExecutor, ExecState, ExecutorConfig, make_chunk

    start = np.array(ALOHA["driver"]["start_pose"])
    down = start.copy()
    down[1], down[2], down[4] = 0.6, 0.3, 1.2
    ex = ChunkExecutor(ExecutorConfig(blend_s=0.0), safety_limits(ALOHA), guard=workspace_guard(ALOHA))
    t = 10.0
    ex.update_state(start, t)
    path = start + np.linspace(0, 1, 50)[:, None] * (down - start)
    r = ex.submit(make_chunk(t, np.arange(50) * 0.02, path), now=t)
    assert not r.accepted and r.reason == "workspace"
    assert ex.tick(t) is None and ex.state == ExecState.IDLE


# ------------------------------------------------------------------------------------ item 3
def test_item3_profile_bases_are_the_world_definition():
    for arm, pose in world.FOLLOWER_BASES.items():
        base = ALOHA["arms"][arm]["base"]
        assert base["parent"] == world.FRAME
        np.testing.assert_allclose(base["xyz"], pose.xyz, atol=1e-6)
        np.testing.assert_allclose(np.array(base["rpy"]) % (2 * np.pi), np.array(pose.rpy) % (2 * np.pi), atol=1e-6)


def test_item3_perception_config_is_the_world_definition():
    from pathlib import Path

    import clamp_perception
    from clamp_perception.pipeline import PerceptionPipeline  # noqa: F401 (the config's reader)

    cfg_path = Path(clamp_perception.__file__).resolve().parent.parent / "config" / "perception.yaml"
    cfg = yaml.safe_load(open(cfg_path, encoding="utf-8"))
    np.testing.assert_allclose(cfg["crop"]["min"], world.WORKSPACE_MIN)
    np.testing.assert_allclose(cfg["crop"]["max"], world.WORKSPACE_MAX)
    for name, view in cfg["views"].items():
        if view.get("follow_arm"):
            continue
        x, y, _ = view["target"]  # fixed views look at the table
        assert world.TABLE_X[0] <= x <= world.TABLE_X[1] and world.TABLE_Y[0] <= y <= world.TABLE_Y[1], name


def test_item3_world_mounted_cameras_look_at_the_table():
    for cam, spec in ALOHA["cameras"].items():
        m = spec["mount"]
        if m["parent"] != world.FRAME:
            continue
        pose = world.pose_matrix(m["xyz"], m["rpy"])
        origin, forward = pose[:3, 3], pose[:3, 0]  # realsense camera_link: x forward
        assert forward[2] < 0, cam
        hit = origin + forward * (origin[2] - world.TABLE_HEIGHT) / -forward[2]
        assert world.TABLE_X[0] <= hit[0] <= world.TABLE_X[1], (cam, hit)
        assert world.TABLE_Y[0] <= hit[1] <= world.TABLE_Y[1], (cam, hit)


def test_item3_simulator_scene_is_the_world_definition():
    from clamp_sim.aloha_sim import AlohaSim

    with AlohaSim("transfer_cube", image_size=(48, 64), cameras=()) as sim:
        poses = sim.link_poses()
        for arm in rig.FOLLOWERS:
            np.testing.assert_allclose(poses[f"{arm}/base_link"], world.base_matrix(arm), atol=1e-4)
        q = sim.state()
        for arm, T in world.points_in_world(q, "gripper_link").items():  # same arm kinematics
            np.testing.assert_allclose(T[:3, 3], poses[f"{arm}/gripper_link"][:3, 3], atol=1e-3)


def test_item6_states_stamped_just_after_the_tick_are_fresh_far_ahead_are_not():
    from clamp_policy.executor import ChunkExecutor, ExecState, ExecutorConfig, make_chunk

    home = np.array(ALOHA["driver"]["start_pose"])
    ex = ChunkExecutor(ExecutorConfig(blend_s=0.0), safety_limits(ALOHA))
    t = 10.0
    ex.update_state(home, t + 0.015)  # sim time: the clock is past the tick's grid point
    ex.submit(make_chunk(t, np.arange(50) * 0.02, np.tile(home, (50, 1))), now=t)
    for _ in range(20):
        ex.update_state(home, t + 0.015)
        ex.tick(t)
        t += 0.02
    assert ex.state == ExecState.RUNNING
    ex.update_state(home, t + 5.0)  # a state from a clock far ahead is not a fresh measurement
    ex.tick(t)
    assert ex.state == ExecState.HOLD and "stale" in ex.reason
