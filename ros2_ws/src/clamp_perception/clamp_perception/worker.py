"""A worker thread that processes the newest frame set, off the thread that receives the messages. ROS-free.

Why (issue 17): the perception node used to render inside its depth callback and to retry a frame
set that lacked TF from its /tf callback, so /tf was only read between renders. On a loaded machine
the TF needed for a frame arrived while a render ran, the next depth group replaced the waiting one,
and when TF always lagged by more than a frame period every frame was skipped ("transform ... is
only known from ... to ..."). Here the subscription callbacks only store (cheap, so /tf is read as
it comes) and this thread does the work:

- `offer(item)`: the newest complete frame set; an item not yet taken is replaced (`superseded`:
  the renderer is slower than the cameras, which is normal, not an error);
- `process(item)` raises `Wait` when an input it needs (TF, camera_info) has not arrived yet: the
  item is retried whenever `inputs_changed()` is called, until `wait_s` has passed since it was
  taken, then `on_give_up(item, wait)`. A newer frame set does not displace the one waiting: with
  TF that lags by more than a frame period it would displace every frame.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Wait(Exception):
    """The item cannot be processed yet (an input may still arrive); `reason` is a short counter key."""

    def __init__(self, reason: str, text: str) -> None:
        super().__init__(text)
        self.reason, self.text = reason, text


class NewestWorker:
    def __init__(
        self,
        process: Callable[[object], None],
        wait_s: float,
        on_give_up: Callable[[object, Wait], None],
        on_error: Callable[[object, BaseException], None] | None = None,
        name: str = "newest worker",
    ) -> None:
        self.process, self.wait_s, self.on_give_up = process, float(wait_s), on_give_up
        self.on_error = on_error
        self.superseded = 0  # items replaced before the worker took them
        self.processed = 0  # items `process` finished (without Wait)
        self._cond = threading.Condition()
        self._item = None
        self._has_item = False
        self._inputs = 0  # bumped by inputs_changed()
        self._stop = False
        self._busy = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------------------ producers
    def offer(self, item) -> None:
        with self._cond:
            if self._has_item:
                self.superseded += 1
            self._item, self._has_item = item, True
            self._cond.notify_all()

    def inputs_changed(self) -> None:
        with self._cond:
            self._inputs += 1
            self._cond.notify_all()

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def idle(self) -> bool:
        """Nothing queued and nothing in progress."""
        with self._cond:
            return not self._has_item and not self._busy

    # -------------------------------------------------------------------------------- worker
    def _run(self) -> None:
        while True:
            with self._cond:
                self._busy = False
                self._cond.wait_for(lambda: self._stop or self._has_item)
                if self._stop:
                    return
                item, self._item, self._has_item = self._item, None, False
                self._busy = True
            self._work(item)

    def _work(self, item) -> None:
        deadline = time.monotonic() + self.wait_s
        while True:
            with self._cond:
                seen = self._inputs  # read before trying: an input arriving during the try wakes the retry
            try:
                self.process(item)
                self.processed += 1
                return
            except Wait as wait:
                left = deadline - time.monotonic()
                with self._cond:
                    if left > 0:
                        self._cond.wait_for(lambda seen=seen: self._stop or self._inputs != seen, timeout=left)
                    if self._stop:
                        return
                    given_up = left <= 0 or self._inputs == seen  # wait_s over, or nothing new within it
                if given_up:
                    self.on_give_up(item, wait)
                    return
            except Exception as exc:  # never let one bad item kill the thread
                if self.on_error is None:
                    raise
                self.on_error(item, exc)
                return
