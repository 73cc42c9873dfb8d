"""The batcher's queue: per-stream FIFOs served round robin, with deadlines at hand.

Fairness: a batch is filled one request per stream in turn, starting where the
previous batch stopped, so a stream with queued work gets at least
floor(batch / streams with work) slots of every batch, however much another
stream has queued. Urgent requests (those that must leave now to make their
deadline) go first, earliest deadline first.

Deadlines: two heaps. Queue deadlines (admission + max queue wait) are shared by
every request admitted together, so that heap holds one item per admitted group,
not per request; the other holds each request's own deadline (receipt + client
timeout), for those that have one. Entries that left the queue stay in a heap
until they surface and are skipped then; the heaps are rebuilt when such entries
dominate, so memory follows the queue, not throughput.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from itertools import islice
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from sidecar.core.request import Request, RequestKey


class _Group:
    """Requests queued together, sharing a queue deadline: how many are still queued."""

    __slots__ = ("queued",)

    def __init__(self) -> None:
        self.queued = 0


@dataclass(slots=True, eq=False)
class Entry:
    request: Request
    enqueued_at: float
    queue_deadline: float  # must be dispatched before this (max queue wait)
    key: RequestKey = field(init=False)  # looked up often: built once
    group: _Group | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.key = (self.request.stream, self.request.request_id)

    @property
    def deadline(self) -> float:
        """Must be answered before this (the client's own timeout); inf if none."""
        return self.request.deadline

    @property
    def expires_at(self) -> float:
        return min(self.request.deadline, self.queue_deadline)


_Heap = list[tuple[float, int, Entry]]
_GroupHeap = list[tuple[float, int, _Group, list[Entry]]]  # (shared queue deadline, tiebreak, group, its entries)


class FairQueue:
    def __init__(self) -> None:
        self._entries: dict[RequestKey, Entry] = {}
        self._streams: dict[int, dict[RequestKey, Entry]] = {}  # insertion-ordered: FIFO per stream
        self._turns: deque[int] = deque()  # streams with queued work, next to serve first
        self._by_queue_deadline: _GroupHeap = []
        self._by_deadline: _Heap = []  # only requests with a finite deadline
        self._tiebreak = 0

    def __len__(self) -> int:
        return len(self._entries)

    def sizes(self) -> dict[str, int]:
        """Its long-lived structures' sizes, for the memory report (docs/soak.md)."""
        return {
            "entries": len(self._entries),
            "streams": len(self._streams),
            "turns": len(self._turns),
            "queue_deadline_heap": len(self._by_queue_deadline),
            "deadline_heap": len(self._by_deadline),
        }

    def __contains__(self, key: RequestKey) -> bool:
        return key in self._entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(list(self._entries.values()))

    def depth_of(self, stream: int) -> int:
        return len(self._streams.get(stream, ()))

    def add(self, entries: list[Entry]) -> None:
        """Queues entries admitted together (they share one queue deadline); their
        keys must be new to the queue and to each other."""
        streams, all_entries = self._streams, self._entries
        group = _Group()
        group.queued = len(entries)
        for entry in entries:
            key = entry.key
            entry.group = group
            all_entries[key] = entry
            stream = streams.get(key[0])
            if stream is None:
                stream = streams[key[0]] = {}
                self._turns.append(key[0])
            stream[key] = entry
            if entry.deadline != math.inf:
                self._tiebreak += 1
                heapq.heappush(self._by_deadline, (entry.deadline, self._tiebreak, entry))
        if entries:
            self._tiebreak += 1
            heapq.heappush(self._by_queue_deadline, (entries[0].queue_deadline, self._tiebreak, group, entries))

    def add_front(self, entries: Iterable[Entry]) -> None:
        """Puts entries back at the head of their streams, in the order given."""
        by_stream: dict[int, list[Entry]] = {}
        for e in entries:
            by_stream.setdefault(e.request.stream, []).append(e)
        for stream_id, front in by_stream.items():
            old = self._streams.get(stream_id)
            if old is None:
                self._turns.appendleft(stream_id)
            merged = {e.key: e for e in front}
            merged.update(old or {})
            self._streams[stream_id] = merged
            for e in front:
                self._entries[e.key] = e
                self._push(e)
                e.group = _Group()
                e.group.queued = 1
                self._tiebreak += 1
                heapq.heappush(self._by_queue_deadline, (e.queue_deadline, self._tiebreak, e.group, [e]))

    def remove(self, key: RequestKey) -> Entry | None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return None
        if entry.group is not None:
            entry.group.queued -= 1
        stream = self._streams[key[0]]
        del stream[key]
        if not stream:
            del self._streams[key[0]]
            self._turns.remove(key[0])
        return entry

    def pop_all(self) -> list[Entry]:
        """Removes and returns every entry, oldest first per stream, streams in turn order."""
        gone = [e for stream_id in self._turns for e in self._streams[stream_id].values()]
        for e in gone:
            if e.group is not None:
                e.group.queued -= 1
        self._entries.clear()
        self._streams.clear()
        self._turns.clear()
        self._by_queue_deadline.clear()
        self._by_deadline.clear()
        return gone

    def oldest_enqueued_at(self) -> float:
        """Of the requests at the heads of the streams: the oldest in the queue."""
        return min((next(iter(s.values())).enqueued_at for s in self._streams.values()), default=math.inf)

    def earliest_queue_deadline(self) -> float:
        heap = self._by_queue_deadline
        while heap:
            at, _, group, _ = heap[0]
            if group.queued:
                return at
            heapq.heappop(heap)
        return math.inf

    def earliest_deadline(self) -> float:
        return self._peek(self._by_deadline)

    def pop_expired(self, now: float) -> list[Entry]:
        """Removes and returns every entry whose queue deadline or own deadline has come."""
        gone: list[Entry] = []
        while self.earliest_queue_deadline() <= now:
            _, _, _, group = heapq.heappop(self._by_queue_deadline)
            for e in group:
                # A requeued entry is listed in its old group too: remove as we go,
                # so that it cannot be taken twice.
                if self._alive(e):
                    self.remove(e.key)
                    gone.append(e)
        gone += self._pop_while(self._by_deadline, now)
        return gone

    def pop_urgent(self, now: float, lead: float) -> list[Entry]:
        """Removes and returns every entry with `deadline - lead <= now`."""
        return self._pop_while(self._by_deadline, now, lead=lead)

    def take(self, n: int, now: float, lead: float, finish_by: float = -math.inf) -> list[Entry]:
        """Up to `n` entries: the urgent ones (`deadline - lead <= now`) first, earliest
        deadline first, then one per stream in turn.

        With `finish_by` (when the batch is estimated to finish, if it waits behind
        others), only entries whose deadline is not before it are taken; the rest
        stay queued, in their places."""
        if finish_by != -math.inf and finish_by > self.earliest_deadline():
            return self._take_finishing_by(n, finish_by)
        taken = self._pop_while(self._by_deadline, now, lead=lead, limit=n)
        if len(self._turns) == 1 and len(taken) < n:
            # One stream with work (the common case): its oldest, in one sweep.
            stream_id = self._turns[0]
            stream = self._streams[stream_id]
            for key in list(islice(stream, n - len(taken))):
                entry = stream.pop(key)
                del self._entries[key]
                if entry.group is not None:
                    entry.group.queued -= 1
                taken.append(entry)
            if not stream:
                del self._streams[stream_id]
                self._turns.clear()
        while len(taken) < n and self._turns:
            stream_id = self._turns[0]
            self._turns.rotate(-1)
            key = next(iter(self._streams[stream_id]))
            entry = self.remove(key)
            assert entry is not None
            taken.append(entry)
        self._compact()
        return taken

    def _take_finishing_by(self, n: int, finish_by: float) -> list[Entry]:
        """One per stream in turn, FIFO within a stream, skipping entries whose deadline
        is before `finish_by`. Streams are read lazily and only changed at the end, so
        a take costs what it scans, not the length of the queue."""
        turns, streams = self._turns, self._streams
        cursors: dict[int, Iterator[Entry]] = {}
        taken: list[Entry] = []
        idle = 0  # streams visited in a row that had nothing to give
        while len(taken) < n and idle < len(turns):
            stream_id = turns[0]
            turns.rotate(-1)
            cursor = cursors.get(stream_id)
            if cursor is None:
                cursor = cursors[stream_id] = iter(streams[stream_id].values())
            entry = next((e for e in cursor if e.deadline >= finish_by), None)
            if entry is None:
                idle += 1
                continue
            idle = 0
            taken.append(entry)
        for entry in taken:
            self.remove(entry.key)
        self._compact()
        return taken

    # ---- heaps ----------------------------------------------------------------------

    def _push(self, entry: Entry) -> None:
        """Onto the own-deadline heap, if it has a deadline."""
        if entry.deadline != math.inf:
            heapq.heappush(self._by_deadline, (entry.deadline, self._tiebreak, entry))

    def _alive(self, entry: Entry) -> bool:
        return self._entries.get(entry.key) is entry

    def _peek(self, heap: _Heap) -> float:
        while heap:
            at, _, entry = heap[0]
            if self._alive(entry):
                return at
            heapq.heappop(heap)
        return math.inf

    def _pop_while(self, heap: _Heap, now: float, lead: float = 0.0, limit: int | None = None) -> list[Entry]:
        # `key - lead <= now`, written exactly as the batcher's timer computes its
        # time (key - lead), so a timer fired at that time always finds it due.
        out: list[Entry] = []
        while (limit is None or len(out) < limit) and self._peek(heap) - lead <= now:
            _, _, entry = heapq.heappop(heap)
            self.remove(entry.key)
            out.append(entry)
        return out

    def _compact(self) -> None:
        heap = self._by_deadline
        if len(heap) > 2 * len(self._entries) + 64:
            heap[:] = [item for item in heap if self._alive(item[2])]
            heapq.heapify(heap)
        groups = self._by_queue_deadline
        if len(groups) > 2 * len(self._entries) + 64:
            groups[:] = [item for item in groups if item[2].queued]
            heapq.heapify(groups)
