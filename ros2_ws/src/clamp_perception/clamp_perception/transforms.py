"""A time-indexed transform tree (what tf2's buffer does), in plain numpy.

One code path for both worlds: the perception node feeds it from live /tf and /tf_static, training
feeds it the same messages replayed from a bag. Messages are duck-typed (anything with
`.transforms`, each with `.header.frame_id`, `.header.stamp.sec/.nanosec`, `.child_frame_id`,
`.transform.translation.x..`, `.transform.rotation.x..w`), so rclpy and rosbags messages both work.

Convention (tf2's): `lookup(target, source, t)` returns T_target_source, the 4x4 that maps points
expressed in `source` into `target`. A TransformStamped with header.frame_id=P, child_frame_id=C
gives T_P_C. Between samples, translation is lerped and rotation slerped.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

import numpy as np
from clamp_core.geometry import invert_transform, make_transform, matrix_to_quat, quat_normalize, quat_slerp


class TransformError(LookupError):
    """Base class: a transform could not be looked up (message names the frames and the reason)."""


class UnknownFrameError(TransformError):
    pass


class ConnectivityError(TransformError):
    pass


class ExtrapolationError(TransformError):
    def __init__(self, message: str, future: bool = False) -> None:
        super().__init__(message)
        self.future = future  # the time asked for is newer than the newest sample: data may still come


@dataclass
class _Edge:
    parent: str
    static: bool
    stamps: list = field(default_factory=list)  # int ns, ascending
    translations: list = field(default_factory=list)  # (3,) float64
    quaternions: list = field(default_factory=list)  # (4,) x, y, z, w


def _fmt_ns(ns: int) -> str:
    return f"{ns / 1e9:.3f}s"


class TransformBuffer:
    """Static and dynamic transforms with interpolation; `lookup(target, source, stamp_ns)`."""

    def __init__(self, cache_time_s: float = 10.0, extrapolation_tolerance_s: float = 0.05) -> None:
        if cache_time_s <= 0:
            raise ValueError(f"cache_time_s must be > 0, got {cache_time_s}")
        self.cache_ns = int(cache_time_s * 1e9)
        self.tolerance_ns = int(extrapolation_tolerance_s * 1e9)
        self._edges: dict[str, _Edge] = {}  # keyed by child frame: every frame has at most one parent

    # ------------------------------------------------------------------------------------- input
    def set_transform(
        self,
        parent: str,
        child: str,
        transform: np.ndarray,
        stamp_ns: int = 0,
        static: bool = False,
    ) -> None:
        """Record T_parent_child (4x4, or a (translation, quaternion xyzw) pair) at `stamp_ns`."""
        parent, child = parent.lstrip("/"), child.lstrip("/")  # tf2 strips leading slashes too
        if not parent or not child:
            raise ValueError(f"transform needs both frame names, got parent={parent!r} child={child!r}")
        if parent == child:
            raise ValueError(f"transform from frame {parent!r} to itself is not allowed")
        if isinstance(transform, tuple):
            translation, quat = (np.asarray(v, dtype=np.float64) for v in transform)
        else:
            transform = np.asarray(transform, dtype=np.float64)
            if transform.shape != (4, 4):
                raise ValueError(f"transform {parent!r}->{child!r} must be 4x4, got shape {transform.shape}")
            translation, quat = transform[:3, 3].copy(), matrix_to_quat(transform[:3, :3])
        if not (np.all(np.isfinite(translation)) and np.all(np.isfinite(quat))):
            raise ValueError(f"transform {parent!r}->{child!r} contains NaN/inf; refusing it")
        quat = quat_normalize(quat)
        edge = self._edges.get(child)
        if edge is None or edge.parent != parent or edge.static != static:
            # (re)parenting a frame replaces its history, as tf2 does when a frame moves in the tree
            edge = self._edges[child] = _Edge(parent, static)
        if static:
            edge.stamps, edge.translations, edge.quaternions = [int(stamp_ns)], [translation], [quat]
            return
        stamp_ns = int(stamp_ns)
        i = bisect.bisect_left(edge.stamps, stamp_ns)
        if i < len(edge.stamps) and edge.stamps[i] == stamp_ns:  # same stamp: newest data wins
            edge.translations[i], edge.quaternions[i] = translation, quat
        else:
            edge.stamps.insert(i, stamp_ns)
            edge.translations.insert(i, translation)
            edge.quaternions.insert(i, quat)
        # forget what is older than the cache window (relative to the newest sample of this edge)
        cut = bisect.bisect_left(edge.stamps, edge.stamps[-1] - self.cache_ns)
        if cut:
            del edge.stamps[:cut], edge.translations[:cut], edge.quaternions[:cut]

    def add_message(self, msg, static: bool = False) -> int:
        """Feed a tf2_msgs/TFMessage (rclpy or rosbags); returns how many transforms were taken."""
        n = 0
        for tf in msg.transforms:
            t, r, stamp = tf.transform.translation, tf.transform.rotation, tf.header.stamp
            self.set_transform(
                tf.header.frame_id,
                tf.child_frame_id,
                (np.array([t.x, t.y, t.z]), np.array([r.x, r.y, r.z, r.w])),
                int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec),
                static=static,
            )
            n += 1
        return n

    def clear(self) -> None:
        """Forget everything (e.g. when sim time jumps backwards)."""
        self._edges.clear()

    # ------------------------------------------------------------------------------------ output
    def frames(self) -> set[str]:
        return set(self._edges) | {e.parent for e in self._edges.values()}

    def latest_stamp(self, child: str) -> int | None:
        edge = self._edges.get(child.lstrip("/"))
        return None if edge is None or edge.static else edge.stamps[-1]

    def _chain(self, frame: str) -> list[str]:
        chain = [frame]
        while chain[-1] in self._edges:
            chain.append(self._edges[chain[-1]].parent)
            if len(chain) > 1000:
                raise ConnectivityError(f"transform tree has a loop through frame {frame!r}")
        return chain

    def _edge_at(self, child: str, stamp_ns: int | None, target: str, source: str) -> np.ndarray:
        edge = self._edges[child]
        if edge.static:  # static transforms hold at every time
            return make_transform(edge.quaternions[0], edge.translations[0])
        if stamp_ns is None:  # "latest"
            return make_transform(edge.quaternions[-1], edge.translations[-1])
        stamps = edge.stamps
        first, last = stamps[0], stamps[-1]
        if stamp_ns < first - self.tolerance_ns or stamp_ns > last + self.tolerance_ns:
            raise ExtrapolationError(
                f"lookup {target!r} <- {source!r} at {_fmt_ns(stamp_ns)}: transform {edge.parent!r} -> {child!r} "
                f"is only known from {_fmt_ns(first)} to {_fmt_ns(last)} ({len(stamps)} samples, tolerance "
                f"{self.tolerance_ns / 1e6:.0f} ms); is its publisher running and are clocks (use_sim_time) "
                "consistent?",
                future=stamp_ns > last,
            )
        if stamp_ns <= first:
            return make_transform(edge.quaternions[0], edge.translations[0])
        if stamp_ns >= last:
            return make_transform(edge.quaternions[-1], edge.translations[-1])
        j = bisect.bisect_right(stamps, stamp_ns)
        t0, t1 = stamps[j - 1], stamps[j]
        alpha = (stamp_ns - t0) / (t1 - t0)
        translation = (1 - alpha) * edge.translations[j - 1] + alpha * edge.translations[j]
        quat = quat_slerp(edge.quaternions[j - 1], edge.quaternions[j], alpha)
        return make_transform(quat, translation)

    def lookup(self, target: str, source: str, stamp_ns: int | None = None) -> np.ndarray:
        """T_target_source (4x4 float64) at `stamp_ns` (None: each transform's latest sample).

        Raises UnknownFrameError, ConnectivityError or ExtrapolationError (all TransformError /
        LookupError) with a message naming the frames and the times that are known.
        """
        target, source = target.lstrip("/"), source.lstrip("/")
        known = self.frames()
        for name in (target, source):
            if name not in known:
                listing = ", ".join(sorted(known)[:20]) + (" ..." if len(known) > 20 else "")
                raise UnknownFrameError(
                    f"frame {name!r} is unknown to the transform buffer (lookup {target!r} <- {source!r}); "
                    f"known frames: [{listing}]. Is its TF (or /tf_static) being published?"
                )
        if target == source:
            return np.eye(4)
        up_source, up_target = self._chain(source), self._chain(target)
        common = next((f for f in up_source if f in set(up_target)), None)
        if common is None:
            raise ConnectivityError(
                f"frames {target!r} and {source!r} are not connected: {source!r} has root {up_source[-1]!r}, "
                f"{target!r} has root {up_target[-1]!r}; a transform between the two trees is missing"
            )
        t_common_source = np.eye(4)
        for child in up_source[: up_source.index(common)]:
            t_common_source = self._edge_at(child, stamp_ns, target, source) @ t_common_source
        t_common_target = np.eye(4)
        for child in up_target[: up_target.index(common)]:
            t_common_target = self._edge_at(child, stamp_ns, target, source) @ t_common_target
        return invert_transform(t_common_target) @ t_common_source

    def can_transform(self, target: str, source: str, stamp_ns: int | None = None) -> bool:
        try:
            self.lookup(target, source, stamp_ns)
        except TransformError:
            return False
        return True
