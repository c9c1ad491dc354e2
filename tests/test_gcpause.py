"""The collector pause: nested and concurrent pauses, and a disabled collector stays so."""

from __future__ import annotations

import gc
import threading
from contextlib import contextmanager

from chalicelib import gcpause


def test_paused_and_restored():
    assert gc.isenabled()
    with gcpause.paused():
        assert not gc.isenabled()
        with gcpause.paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer pause still runs
    assert gc.isenabled()


def test_restored_after_an_exception():
    try:
        with gcpause.paused():
            raise ValueError("boom")
    except ValueError:
        pass
    assert gc.isenabled()


def test_a_collector_disabled_before_stays_disabled():
    gc.disable()
    try:
        with gcpause.paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()


@contextmanager
def another_request():
    """A request running in another thread for the duration of the block."""
    inside, release = threading.Event(), threading.Event()

    def request():
        with gcpause.paused():
            inside.set()
            release.wait(10)

    t = threading.Thread(target=request)
    t.start()
    assert inside.wait(10)
    try:
        yield
    finally:
        release.set()
        t.join(10)


def test_overlapping_threads_enable_it_only_when_the_last_ends():
    with another_request():
        with gcpause.paused():
            pass
        assert not gc.isenabled()  # the other thread's request still runs
    assert gc.isenabled()


def test_endless_overlap_still_collects(monkeypatch):
    monkeypatch.setattr(gcpause, "BACKLOG", 1000)
    with another_request():
        with gcpause.paused():
            garbage = [[i] for i in range(5000)]  # tracked allocations
            assert gc.get_count()[0] > 1000
        del garbage
        assert gc.get_count()[0] < 1000  # collected as this request ended
        assert not gc.isenabled()  # the other request still runs
    assert gc.isenabled()
