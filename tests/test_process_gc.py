"""shared.process_gc: start-up objects leave the cyclic collector's full walks."""

from __future__ import annotations

import gc
import weakref

import pytest

from shared.process_gc import freeze_startup_objects


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: tracked by the cyclic collector


def test_given_objects_alive_at_start_up_when_frozen_expect_collections_skip_them_but_not_later_ones() -> None:
    # given a long-lived object of start-up, and garbage made before the freeze
    started = Node()
    garbage = Node()
    garbage_ref = weakref.ref(garbage)
    del garbage
    # when frozen
    frozen = freeze_startup_objects()
    # expect the garbage collected first, the start-up object out of every generation, a count back
    assert frozen == gc.get_freeze_count() > 0
    tracked = {id(o) for o in gc.get_objects()}
    assert id(started) not in tracked and garbage_ref() is None
    # and an object made afterwards is tracked (and collected) as before
    later = Node()
    assert id(later) in {id(o) for o in gc.get_objects()}


def test_given_a_method_warmed_up_when_its_first_job_ends_expect_one_freeze_then_none(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from worker import process_state

    # given a pool process whose first fast job warmed the method up
    monkeypatch.setattr(process_state, "_warmed", set())
    monkeypatch.setattr(process_state, "_freeze_pending", False)
    gc.unfreeze()
    process_state.warm_up("fast")
    assert gc.get_freeze_count() == 0  # nothing frozen during the job itself
    # when that job ends, expect its objects frozen once
    process_state.freeze_after_job()
    assert gc.get_freeze_count() > 0
    # and when the next job of the same method ends, nothing more
    gc.unfreeze()
    process_state.warm_up("fast")
    process_state.freeze_after_job()
    assert gc.get_freeze_count() == 0


@pytest.mark.parametrize("gc_freeze", [True, False])
def test_given_the_setting_when_a_first_job_ends_expect_the_worker_to_freeze_or_not(
        monkeypatch: pytest.MonkeyPatch, gc_freeze: bool) -> None:
    from shared.settings import Settings
    from worker import celery_app, process_state

    # given a pool process whose first job of a method has just ended
    monkeypatch.setattr(process_state, "_freeze_pending", True)
    monkeypatch.setattr(celery_app, "get_settings", lambda: Settings(gc_freeze=gc_freeze))
    gc.unfreeze()
    # when Celery's task_postrun handler runs
    celery_app._freeze_after_first_job()
    # expect a freeze only with the setting on
    assert (gc.get_freeze_count() > 0) is gc_freeze
