"""Group per-camera frames that belong to one observation (stamps within a tolerance). ROS-free.

The node (live topics) and the bag reader (replayed messages) both use it, so a bag yields the same
frame groups offline as online. Required cameras must all be present; optional cameras join a group
when they have a frame within the tolerance.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass
class FrameGroup:
    stamp_ns: int  # observation time: the newest stamp in the group
    frames: dict  # camera -> payload
    stamps: dict  # camera -> its own stamp (ns)
    missing_optional: list  # optional cameras that had no frame within the tolerance


class FrameSynchronizer:
    def __init__(
        self,
        required: list[str] | tuple[str, ...],
        optional: list[str] | tuple[str, ...] = (),
        tolerance_ns: int = 20_000_000,
        queue_size: int = 5,
    ) -> None:
        if not required:
            raise ValueError("FrameSynchronizer needs at least one required camera")
        overlap = set(required) & set(optional)
        if overlap:
            raise ValueError(f"cameras {sorted(overlap)} are listed as both required and optional")
        self.required, self.optional = list(required), list(optional)
        self.tolerance_ns = int(tolerance_ns)
        self._queues: dict[str, deque] = {c: deque(maxlen=queue_size) for c in self.required + self.optional}
        self.last_stamp: dict[str, int] = {}
        self.dropped_unmatched = 0  # frames that aged out without ever joining a group

    @property
    def cameras(self) -> list[str]:
        return self.required + self.optional

    def add(self, camera: str, stamp_ns: int, payload) -> None:
        q = self._queues.get(camera)
        if q is None:
            raise KeyError(f"camera {camera!r} is not synchronised here; cameras: {self.cameras}")
        if q and stamp_ns <= q[-1][0]:
            if stamp_ns == q[-1][0]:
                q[-1] = (stamp_ns, payload)  # duplicate stamp: keep the newest data
                return
            q.clear()  # time went backwards (sim reset / bag loop): start this camera afresh
        if len(q) == q.maxlen:
            self.dropped_unmatched += 1
        q.append((stamp_ns, payload))
        self.last_stamp[camera] = stamp_ns

    @staticmethod
    def _closest(q: deque, t: int):
        best = None
        for item in q:
            if best is None or abs(item[0] - t) < abs(best[0] - t):
                best = item
        return best

    def pop(self) -> FrameGroup | None:
        """The newest complete group (and drop everything at or before it), or None."""
        ref = self.required[0]
        for t, _ in reversed(self._queues[ref]):
            chosen = {}
            for cam in self.required:
                item = self._closest(self._queues[cam], t)
                if item is None or abs(item[0] - t) > self.tolerance_ns:
                    break
                chosen[cam] = item
            else:
                missing = []
                for cam in self.optional:
                    item = self._closest(self._queues[cam], t)
                    if item is not None and abs(item[0] - t) <= self.tolerance_ns:
                        chosen[cam] = item
                    else:
                        missing.append(cam)
                for cam, (s, _) in chosen.items():
                    q = self._queues[cam]
                    while q and q[0][0] <= s:
                        q.popleft()
                return FrameGroup(
                    stamp_ns=max(s for s, _ in chosen.values()),
                    frames={c: p for c, (_, p) in chosen.items()},
                    stamps={c: s for c, (s, _) in chosen.items()},
                    missing_optional=missing,
                )
        return None

    def waiting_for(self) -> list[str]:
        """Required cameras with no queued frame (what a stalled group lacks)."""
        return [c for c in self.required if not self._queues[c]]
