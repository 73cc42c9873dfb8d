"""Groups: the N items of one KServe request, answered as one.

A KServe request of N items runs through the pipeline as N requests with
consecutive ids on its call's stream; this gathers their N answers back into one.

Rules (everything that decides a group's answer lives here):
- `open` gives a group the next N ids of its stream, in item order.
- Every item answer belongs to exactly one open group; an answer for an id no
  open group holds, or twice for one id, is a bug upstream: GroupError, and
  nothing changes.
- A group whose N items all succeeded is answered with each output's bytes
  joined in item order.
- A group with a failed item is answered with the first failure that arrived.
  With `early`, that answer is given at once (a unary call can end there and
  withdraw the rest); the group is still held until its last item is answered,
  so late answers are absorbed, not taken for errors.
- A group is forgotten once all its items are answered.

Transition table (state after the item answer; `done` = the group's answer is
given with this event, `gone` = forgotten); TRANSITIONS below is this table as
the code runs it, and the tests read it there:

    state \\ answer      ok (not last)   failed (not last)          last item
    COLLECTING          COLLECTING      FAILED (early: done)       done, gone
    FAILED              FAILED          FAILED                     done unless early, gone
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Generic, TypeVar

from sidecar.core.status import Failure

Tag = TypeVar("Tag", bound=Hashable)


class GroupError(RuntimeError):
    """An answer no open group was waiting for; the groups are unchanged."""


class State(Enum):
    COLLECTING = "COLLECTING"
    FAILED = "FAILED"


class Given(Enum):
    """The group's answer an item's answer gives."""

    NOTHING = "nothing yet"
    OUTPUTS = "the joined outputs"
    THIS_FAILURE = "this item's failure"
    FIRST_FAILURE = "the failure that came first"


# The table above, as the code runs it: (state, this item failed, it is the last,
# early) -> (the group's state after, None once it is forgotten; the answer given).
TRANSITIONS: dict[tuple[State, bool, bool, bool], tuple[State | None, Given]] = {
    (State.COLLECTING, False, False, False): (State.COLLECTING, Given.NOTHING),
    (State.COLLECTING, False, False, True): (State.COLLECTING, Given.NOTHING),
    (State.COLLECTING, True, False, False): (State.FAILED, Given.NOTHING),
    (State.COLLECTING, True, False, True): (State.FAILED, Given.THIS_FAILURE),
    (State.COLLECTING, False, True, False): (None, Given.OUTPUTS),
    (State.COLLECTING, False, True, True): (None, Given.OUTPUTS),
    (State.COLLECTING, True, True, False): (None, Given.THIS_FAILURE),
    (State.COLLECTING, True, True, True): (None, Given.THIS_FAILURE),
    (State.FAILED, False, False, False): (State.FAILED, Given.NOTHING),
    (State.FAILED, False, False, True): (State.FAILED, Given.NOTHING),
    (State.FAILED, True, False, False): (State.FAILED, Given.NOTHING),
    (State.FAILED, True, False, True): (State.FAILED, Given.NOTHING),
    (State.FAILED, False, True, False): (None, Given.FIRST_FAILURE),
    (State.FAILED, True, True, False): (None, Given.FIRST_FAILURE),
    (State.FAILED, False, True, True): (None, Given.NOTHING),  # answered early already
    (State.FAILED, True, True, True): (None, Given.NOTHING),
}


@dataclass(frozen=True, slots=True)
class GroupAnswer(Generic[Tag]):
    """A group's one answer: joined outputs (spec order), or its first failure."""

    tag: Tag
    n: int
    outputs: tuple[bytes, ...] | None
    failure: Failure | None


class _Group(Generic[Tag]):
    __slots__ = ("tag", "base", "n", "left", "parts", "failure", "early", "state")

    def __init__(self, tag: Tag, base: int, n: int, early: bool) -> None:
        self.tag, self.base, self.n, self.early = tag, base, n, early
        self.left = n
        self.parts: list[tuple[bytes, ...] | None] = [None] * n
        self.failure: Failure | None = None
        self.state = State.COLLECTING


class Groups(Generic[Tag]):
    """The open groups of one stream."""

    def __init__(self, first_id: int = 1) -> None:
        self._next = first_id
        self._by_id: dict[int, _Group[Tag]] = {}
        self._open = 0

    def __len__(self) -> int:
        """Open groups."""
        return self._open

    @property
    def items(self) -> int:
        """Items still to be answered, over all open groups."""
        return len(self._by_id)

    def open(self, tag: Tag, n: int, *, early: bool = False) -> range:
        """A new group of `n` items; returns the request ids its items go by."""
        if n < 1:
            raise ValueError(f"a group holds at least one item, not {n}")
        ids = range(self._next, self._next + n)
        self._next += n
        group: _Group[Tag] = _Group(tag, ids.start, n, early)
        for i in ids:
            self._by_id[i] = group
        self._open += 1
        return ids

    def tag(self, request_id: int) -> Tag:
        """The tag of the open group that holds this item; GroupError if none does."""
        group = self._by_id.get(request_id)
        if group is None:
            raise GroupError(f"item {request_id}: no open group holds it (answered twice, or never opened)")
        return group.tag

    def state(self, request_id: int) -> State | None:
        group = self._by_id.get(request_id)
        return None if group is None else group.state

    def answered(
        self, request_id: int, outputs: tuple[bytes, ...] | None, failure: Failure | None = None
    ) -> GroupAnswer[Tag] | None:
        """One item's answer (outputs, or a failure); the group's answer if this gives it."""
        if (outputs is None) == (failure is None):
            raise GroupError(f"item {request_id}: an answer is outputs or a failure, exactly one")
        group = self._by_id.get(request_id)
        if group is None:
            raise GroupError(f"item {request_id}: no open group holds it (answered twice, or never opened)")
        del self._by_id[request_id]
        group.left -= 1
        after, given = TRANSITIONS[(group.state, failure is not None, group.left == 0, group.early)]
        if group.state is State.COLLECTING:
            if failure is not None:
                group.failure, group.parts = failure, []  # nothing joined will be needed
            else:
                group.parts[request_id - group.base] = outputs
        answer: GroupAnswer[Tag] | None = None
        if given is Given.OUTPUTS:
            answer = GroupAnswer(group.tag, group.n, _join(group.parts), None)
        elif given is Given.THIS_FAILURE:
            answer = GroupAnswer(group.tag, group.n, None, failure)
        elif given is Given.FIRST_FAILURE:
            answer = GroupAnswer(group.tag, group.n, None, group.failure)
        if after is None:
            self._open -= 1
        else:
            group.state = after
        return answer

    def tags(self) -> list[Tag]:
        """The open groups' tags (each once), oldest first."""
        seen: dict[Tag, None] = {}
        for group in self._by_id.values():
            seen.setdefault(group.tag, None)
        return list(seen)


def _join(parts: Sequence[tuple[bytes, ...] | None]) -> tuple[bytes, ...]:
    """Each output's bytes, item after item."""
    columns = zip(*parts)  # type: ignore[misc]
    return tuple(b"".join(column) for column in columns)
