"""Coalescing delivery to an actor: many messages, one wake-up.

Every `tell` to a pykka actor is a queue put that wakes the receiver's thread;
on the hot path that hand-off, not the work, was most of the cost (measured:
five actor messages per request when each stream message carried one request,
~20 µs each on two cores). An Inbox keeps a sender's messages in a deque and
puts at most one `Wake` in the receiver's mailbox at a time: a receiver that is
busy when more messages come takes them all in its next pass, so the number of
wake-ups falls as the load rises, and nothing waits for company when it is low.

Messages through one inbox are handled in the order they were sent. A message a
sender `tell`s directly after an inbox message reaches the receiver after it
(the Wake that carries it is already in the mailbox by then), so ordering
promises such as "a Withdraw comes behind the requests it names" still hold.

Why the race is harmless: `take()` clears `_armed` before it drains, and a
sender appends before it reads `_armed`; so a message is either drained by a
pass that has not cleared the flag yet, or its sender sees the flag clear and
sends a new Wake (which may then find nothing left: harmless).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

import pykka


class Wake:
    """In a mailbox: `inbox` holds messages for this actor."""

    __slots__ = ("inbox",)

    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox

    def __repr__(self) -> str:
        return f"Wake({len(self.inbox)} waiting)"


class Inbox:
    __slots__ = ("_ref", "_items", "_armed", "_wake")

    def __init__(self, ref: pykka.ActorRef[Any]) -> None:
        self._ref = ref
        self._items: deque[Any] = deque()
        self._armed = False
        self._wake = Wake(self)

    def __len__(self) -> int:
        return len(self._items)

    def tell(self, message: Any) -> None:
        """As ActorRef.tell; raises pykka.ActorDeadError if the receiver has stopped."""
        self._items.append(message)
        if not self._armed:
            self.wake()
        elif self._ref.actor_stopped.is_set():
            self._dead()

    def _dead(self) -> None:
        """The receiver stopped with a Wake still in its mailbox: nothing will be taken."""
        self._items.clear()
        raise pykka.ActorDeadError(f"{self._ref} stopped; its inbox is closed")

    def wake(self) -> None:
        """Puts the Wake in the receiver's mailbox."""
        self._armed = True
        try:
            self._ref.tell(self._wake)
        except pykka.ActorDeadError:
            self._armed = False
            self._items.clear()  # nobody will ever take them
            raise

    def take(self) -> list[Any]:
        """The receiver's side: every message waiting, oldest first."""
        self._armed = False
        items = self._items
        return [items.popleft() for _ in range(len(items))]


class LazyInbox(Inbox):
    """For messages nobody waits on (metrics): senders wake the receiver at most
    once per `interval_s`, or when `backlog` messages wait. What is left waiting
    the receiver takes on its own: its ticker wakes it for a non-empty lazy inbox
    (`pending`), and a read drains every lazy inbox first (actors/metrics.py).
    Time here is the real clock: it only paces delivery, and decides nothing."""

    __slots__ = ("_interval_s", "_backlog", "_woken_at")

    def __init__(self, ref: pykka.ActorRef[Any], interval_s: float, backlog: int = 1024) -> None:
        super().__init__(ref)
        self._interval_s = interval_s
        self._backlog = backlog
        self._woken_at = -float("inf")

    @property
    def pending(self) -> bool:
        """Messages wait and no Wake is on its way for them."""
        return bool(self._items) and not self._armed

    def tell(self, message: Any) -> None:
        self._items.append(message)
        if self._armed:
            if self._ref.actor_stopped.is_set():
                self._dead()
            return
        now = time.monotonic()
        if now - self._woken_at >= self._interval_s or len(self._items) >= self._backlog:
            self._woken_at = now
            self.wake()


def handle_wake(wake: Wake, receive: Callable[[Any], Any]) -> None:
    """Runs each waiting message through the actor's own handler, in order."""
    for message in wake.inbox.take():
        receive(message)
