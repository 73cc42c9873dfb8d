"""Coalescing delivery (actors/inbox.py), with real pykka actors."""

from __future__ import annotations

import threading
from typing import Any

import pykka
import pytest

from actors.base import SidecarActor
from actors.inbox import Inbox, LazyInbox, Wake, handle_wake


class Recorder(SidecarActor):
    """Records what it handles; blocks on `gate` while handling a message named 'hold'."""

    def __init__(self, gate: threading.Event) -> None:
        super().__init__()
        self.gate = gate
        self.entered = threading.Event()
        self.seen: list[Any] = []
        self.wakes = 0

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Wake):
            self.wakes += 1
            handle_wake(message, self.on_receive)
        elif message == "ask":
            return list(self.seen), self.wakes
        else:
            if message == "hold":
                self.entered.set()
                self.gate.wait(10)
            self.seen.append(message)
        return None


@pytest.fixture
def recorder():
    gate = threading.Event()
    ref = Recorder.start(gate)
    yield ref, gate, ref.proxy().entered.get()
    gate.set()
    ref.stop()


def test_messages_sent_while_the_receiver_is_busy_share_one_wake(recorder):
    ref, gate, entered = recorder
    inbox = Inbox(ref)
    inbox.tell("hold")  # the receiver is busy with this one ...
    assert entered.wait(5)
    for i in range(100):  # ... while these wait behind a single Wake
        inbox.tell(i)
    gate.set()
    seen, wakes = ref.ask("ask", timeout=5)
    assert seen == ["hold", *range(100)]
    assert wakes == 2


def test_a_direct_tell_after_an_inbox_message_arrives_after_it(recorder):
    ref, gate, _ = recorder
    inbox = Inbox(ref)
    for i in range(50):
        inbox.tell(i)
        ref.tell(f"direct {i}")
    gate.set()
    seen, _ = ref.ask("ask", timeout=5)
    for i in range(50):
        assert seen.index(i) < seen.index(f"direct {i}")
    assert sorted(x for x in seen if isinstance(x, int)) == list(range(50))


def test_many_threads_lose_nothing_and_keep_their_own_order(recorder):
    ref, _, _ = recorder
    inbox = Inbox(ref)

    def send(t: int) -> None:
        for i in range(2000):
            inbox.tell((t, i))

    threads = [threading.Thread(target=send, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seen, wakes = ref.ask("ask", timeout=10)
    assert len(seen) == 8000
    for t in range(4):
        assert [i for s, i in seen if s == t] == list(range(2000))
    assert wakes <= 8000


def test_a_lazy_inbox_wakes_at_most_once_per_interval_and_keeps_the_rest(recorder):
    ref, gate, entered = recorder
    inbox = LazyInbox(ref, interval_s=3600)
    inbox.tell("hold")  # the first wakes it ...
    assert entered.wait(5)
    for i in range(10):
        inbox.tell(i)  # ... these, within the interval, do not
    gate.set()
    seen, wakes = ref.ask("ask", timeout=5)
    assert (seen, wakes) == (["hold"], 1)
    assert inbox.pending and len(inbox) == 10
    inbox.wake()  # what the metrics actor's ticker does
    seen, wakes = ref.ask("ask", timeout=5)
    assert seen == ["hold", *range(10)] and not inbox.pending


def test_a_lazy_inbox_wakes_when_its_backlog_fills(recorder):
    ref, _, _ = recorder
    inbox = LazyInbox(ref, interval_s=3600, backlog=5)
    inbox.tell("first")  # wakes
    ref.ask("ask", timeout=5)
    for i in range(5):
        inbox.tell(i)  # the fifth fills the backlog
    seen, wakes = ref.ask("ask", timeout=5)
    assert seen == ["first", *range(5)] and wakes == 2


def test_telling_a_stopped_actor_raises_and_leaves_nothing_behind():
    ref = Recorder.start(threading.Event())
    inbox = Inbox(ref)
    ref.stop()
    with pytest.raises(pykka.ActorDeadError):
        inbox.tell("late")
    assert len(inbox) == 0 and not isinstance(inbox, LazyInbox)


def test_an_armed_inbox_whose_receiver_stopped_raises_instead_of_piling_up(recorder):
    ref, gate, entered = recorder
    inbox = Inbox(ref)
    inbox.tell("hold")
    assert entered.wait(5)
    inbox.tell("armed")  # a Wake is on its way ...
    ref.stop(block=False)  # ... to a receiver that stops before taking it
    gate.set()
    ref.actor_stopped.wait(5)
    with pytest.raises(pykka.ActorDeadError):
        inbox.tell("late")
    assert len(inbox) == 0
