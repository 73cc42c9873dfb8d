"""The stream lifecycle: window, drain, bad frames, write failures, and its invariants."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.core.status import Code
from sidecar.core.stream import (
    TRANSITIONS,
    BadFrame,
    Drain,
    Gone,
    Phase,
    Read,
    ReadEnded,
    Stop,
    StreamError,
    StreamLifecycle,
)


def size(answer: str) -> int:
    return len(answer)


def test_stops_reading_at_the_window_and_resumes_when_answers_are_written():
    life: StreamLifecycle[str] = StreamLifecycle(window=3)
    life.handle(Read(2))
    assert life.may_read
    life.handle(Read(1))
    assert not life.may_read and life.outstanding == 3
    life.answered(["a", "b"])
    assert not life.may_read  # answered is not enough: they must be written
    taken = life.take(100, size)
    assert taken.answers == ["a", "b"]
    assert not life.may_read  # the write is under way
    life.write_done()
    assert life.may_read and life.outstanding == 1 and life.written == 2


def test_unknown_cancel_notices_count_against_the_window_until_written():
    life: StreamLifecycle[str] = StreamLifecycle(window=2)
    life.handle(Read(0, cancels=2))
    life.unknown_cancels([7, 8])
    assert not life.may_read
    taken = life.take(100, size)
    assert taken.cancels == [7, 8] and not life.may_read
    life.write_done()
    assert life.may_read


def test_take_packs_up_to_the_budget_but_always_at_least_one():
    life: StreamLifecycle[str] = StreamLifecycle(window=10)
    life.handle(Read(3))
    life.answered(["x" * 50, "y" * 50, "z" * 50])
    assert life.take(120, size).answers == ["x" * 50, "y" * 50]
    with pytest.raises(StreamError):
        life.take(120, size)  # one write at a time
    life.write_done()
    assert life.take(10, size).answers == ["z" * 50]  # larger than the budget: goes alone


def test_cancel_notices_are_packed_within_the_budget():
    life: StreamLifecycle[str] = StreamLifecycle(window=10_000)
    life.handle(Read(0, cancels=5000))
    life.unknown_cancels(list(range(5000)))
    taken = life.take(1100, size)
    assert len(taken.cancels) == 100  # 11 bytes each
    life.write_done()
    assert len(life.take(1_000_000, size).cancels) == 4900


def test_client_half_close_ends_the_call_ok_once_everything_is_written():
    life: StreamLifecycle[str] = StreamLifecycle(window=4)
    life.handle(Read(1))
    life.handle(ReadEnded())
    assert not life.finished and not life.may_read
    life.answered(["a"])
    life.take(100, size)
    assert not life.finished
    life.write_done()
    assert life.finished and life.end_status() is None


def test_drain_stops_reading_answers_what_was_read_then_ends_unavailable():
    life: StreamLifecycle[str] = StreamLifecycle(window=4)
    life.handle(Read(2))
    life.handle(Drain())
    assert not life.may_read and not life.finished
    life.handle(Read(1))  # a read already under way when the drain began
    life.answered(["a", "b", "c"])
    life.take(100, size)
    life.write_done()
    assert life.finished
    end = life.end_status()
    assert end is not None and end.code is Code.UNAVAILABLE and "draining" in end.message


def test_drain_of_a_stream_with_nothing_outstanding_finishes_it_at_once():
    life: StreamLifecycle[str] = StreamLifecycle(window=4)
    life.handle(Drain())
    assert life.finished


def test_bad_frame_ends_the_call_invalid_argument_after_the_answers_before_it():
    life: StreamLifecycle[str] = StreamLifecycle(window=4)
    life.handle(Read(1))
    life.handle(BadFrame("message 2 is not an InferStreamRequest"))
    with pytest.raises(StreamError):
        life.handle(Read(1))  # nothing is read after a bad frame
    assert not life.finished
    life.answered(["a"])
    life.take(100, size)
    life.write_done()
    end = life.end_status()
    assert life.finished and end is not None and end.code is Code.INVALID_ARGUMENT and "message 2" in end.message


def test_the_first_reason_to_stop_decides_the_end():
    life: StreamLifecycle[str] = StreamLifecycle(window=4)
    life.handle(Drain())
    life.handle(ReadEnded())
    life.handle(BadFrame("late"))
    assert life.stop is Stop.DRAINING and life.end_status().code is Code.UNAVAILABLE


def test_write_failure_drops_that_message_and_everything_after():
    life: StreamLifecycle[str] = StreamLifecycle(window=4)
    life.handle(Read(4))
    life.answered(["a", "b"])
    life.take(1, size)  # "a"
    life.answered(["c"])
    assert life.write_failed() == ["b", "c"]
    assert life.phase is Phase.GONE and life.finished
    assert list(life.answered(["d"])) == ["d"]  # the last one, arriving late: dropped too
    assert life.outstanding == 0 and life.dropped == 4 and life.written == 0


def test_gone_drops_the_outbox_and_later_answers():
    life: StreamLifecycle[str] = StreamLifecycle(window=4)
    life.handle(Read(2))
    life.answered(["a"])
    assert life.handle(Gone()) == ["a"]
    assert list(life.answered(["b"])) == ["b"]
    assert life.outstanding == 0 and life.dropped == 2


def test_more_answers_than_requests_is_illegal_and_changes_nothing():
    life: StreamLifecycle[str] = StreamLifecycle(window=4)
    life.handle(Read(1))
    with pytest.raises(StreamError):
        life.answered(["a", "b"])
    assert life.outstanding == 1 and not life.has_output


def test_every_phase_event_pair_is_in_the_table_or_illegal_and_harmless():
    events = [Read(1), ReadEnded(), BadFrame("x"), Drain(), Gone()]
    for phase in Phase:
        for event in events:
            life: StreamLifecycle[str] = StreamLifecycle(window=4)
            if phase is Phase.STOPPED:
                life.handle(ReadEnded())
            elif phase is Phase.GONE:
                life.handle(Gone())
            before = (life.phase, life.stop, life.read, life.dropped)
            expected = TRANSITIONS.get((phase, type(event)))
            if expected is None or (isinstance(event, Read) and phase is Phase.STOPPED):
                with pytest.raises(StreamError):
                    life.handle(event)
                assert (life.phase, life.stop, life.read, life.dropped) == before
            else:
                life.handle(event)
                assert life.phase is expected


# ---- properties -----------------------------------------------------------------------

steps = st.lists(
    st.tuples(
        st.sampled_from(["read", "read", "answer", "answer", "write", "write", "fail", "end", "bad", "drain", "gone"]),
        st.integers(min_value=0, max_value=5),
    ),
    max_size=80,
)


@settings(max_examples=400, deadline=None)
@given(window=st.integers(1, 6), steps=steps)
def test_every_request_read_is_written_once_or_dropped_and_the_window_holds(window, steps):
    """A shell that obeys the queries: reads only when may_read, answers what it read."""
    life: StreamLifecycle[int] = StreamLifecycle(window)
    read_ids: list[int] = []
    answered: list[int] = []
    written: list[int] = []
    dropped: list[int] = []
    in_write: list[int] = []
    for kind, n in steps:
        if kind == "read" and life.may_read:
            n = max(1, n)
            life.handle(Read(n))
            read_ids.extend(range(len(read_ids), len(read_ids) + n))
        elif kind == "read" and life.phase is Phase.STOPPED and life.stop is Stop.DRAINING and n == 1:
            life.handle(Read(1))  # the read under way when the drain began
            read_ids.append(len(read_ids))
        elif kind == "answer":
            waiting = [i for i in read_ids if i not in answered]
            batch = waiting[:n]
            answered.extend(batch)
            dropped.extend(life.answered(batch))
        elif kind == "write" and not in_write:
            if life.has_output and life.phase is not Phase.GONE:
                in_write = life.take(2 + n, lambda a: 1).answers
            continue
        elif kind == "write":
            life.write_done()
            written.extend(in_write)
            in_write = []
        elif kind == "fail" and in_write:
            dropped.extend(in_write + life.write_failed())
            in_write = []
        elif kind == "end" and life.phase is Phase.OPEN:
            life.handle(ReadEnded())
        elif kind == "bad" and life.phase is Phase.OPEN:
            life.handle(BadFrame("bad"))
        elif kind == "drain":
            life.handle(Drain())
        elif kind == "gone" and not in_write:
            dropped.extend(life.handle(Gone()))
        # The window: what is read and not yet written back never exceeds it by
        # more than the last read (one message may carry several requests).
        assert life.outstanding <= window + 5
        assert life.outstanding == len(read_ids) - len(written) - len(dropped)
    # Finish the way the shell does: answer everything, write until finished.
    if in_write:
        life.write_done()
        written.extend(in_write)
    waiting = [i for i in read_ids if i not in answered]
    dropped.extend(life.answered(waiting))
    if life.phase is Phase.OPEN:
        life.handle(ReadEnded())
    while life.has_output and life.phase is not Phase.GONE:
        written.extend(life.take(3, lambda a: 1).answers)
        life.write_done()
    assert life.finished  # draining (or any stop) never strands a request
    assert sorted(written + dropped) == read_ids  # exactly once each
    assert life.outstanding == 0
