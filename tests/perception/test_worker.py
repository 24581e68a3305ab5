"""NewestWorker (ROS-free): the perception node's render thread takes the newest frame set and
waits for late inputs (TF) instead of letting a newer frame set displace the waiting one."""

from __future__ import annotations

import threading
import time

from clamp_perception.worker import NewestWorker, Wait
from ros_harness import wait_until


def test_a_frame_waiting_for_tf_is_not_displaced_by_newer_frames():
    """TF that always lags by more than a frame period: every frame used to be skipped."""
    tf_until = [0]  # newest frame index the 'TF buffer' covers
    done, gave_up = [], []
    lock = threading.Lock()

    def process(i):
        with lock:
            covered = tf_until[0]
        if i > covered:
            raise Wait("missing_tf", f"frame {i} needs TF up to {i}, have {covered}")
        done.append(i)

    worker = NewestWorker(process, wait_s=10.0, on_give_up=lambda i, w: gave_up.append(i))
    try:
        for frame in range(1, 31):  # frames at a steady rate, TF three frames behind
            worker.offer(frame)
            with lock:
                tf_until[0] = frame - 3
            worker.inputs_changed()
            time.sleep(0.01)
        with lock:
            tf_until[0] = 30  # TF catches up with the last frame
        worker.inputs_changed()
        wait_until(lambda: done and done[-1] == 30, 10.0, "the newest frame processed once TF covers it")
    finally:
        worker.stop()
    assert not gave_up
    assert len(done) >= 2 and done == sorted(done)
    assert worker.superseded + len(done) == 30  # every frame processed or replaced by a newer one (counted)


def test_gives_up_after_wait_s_even_while_inputs_keep_arriving():
    gave_up = threading.Event()
    worker = NewestWorker(lambda i: (_ for _ in ()).throw(Wait("missing_tf", "never")), 0.2, lambda i, w: gave_up.set())
    try:
        worker.offer(1)
        t0 = time.monotonic()
        while not gave_up.is_set() and time.monotonic() - t0 < 5.0:
            worker.inputs_changed()  # e.g. /tf at a high rate that never covers the frame
            time.sleep(0.005)
        assert gave_up.is_set()
        assert time.monotonic() - t0 < 2.0
        wait_until(worker.idle, 2.0, "the worker idle")
    finally:
        worker.stop()


def test_errors_are_reported_and_the_worker_goes_on():
    errors, done = [], []

    def process(i):
        if i == 1:
            raise RuntimeError("bad frame")
        done.append(i)

    worker = NewestWorker(process, 0.1, lambda i, w: None, on_error=lambda i, e: errors.append((i, str(e))))
    try:
        worker.offer(1)
        wait_until(lambda: errors, 2.0, "the error reported")
        worker.offer(2)
        wait_until(lambda: done == [2], 2.0, "the next frame processed")
    finally:
        worker.stop()
    assert errors == [(1, "bad frame")]
