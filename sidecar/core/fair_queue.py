"""The batcher's queue: per-stream FIFOs served round robin, with deadlines at hand.

Fairness: a batch is filled one request per stream in turn, starting where the
previous batch stopped, so a stream with queued work gets at least
floor(batch / streams with work) slots of every batch, however much another
stream has queued. Urgent requests (those that must leave now to make their
deadline) go first, earliest deadline first.

Deadlines: two heaps, one on each request's queue deadline (admission + max queue
wait) and one on its own deadline (receipt + client timeout). Entries that left
the queue stay in a heap until they surface and are skipped then; the heaps are
rebuilt when such entries dominate, so memory follows the queue, not throughput.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from sidecar.core.request import Request, RequestKey


@dataclass(slots=True, eq=False)
class Entry:
    request: Request
    enqueued_at: float
    queue_deadline: float  # must be dispatched before this (max queue wait)

    @property
    def deadline(self) -> float:
        """Must be answered before this (the client's own timeout); inf if none."""
        return self.request.deadline

    @property
    def expires_at(self) -> float:
        return min(self.request.deadline, self.queue_deadline)


_Heap = list[tuple[float, int, Entry]]


class FairQueue:
    def __init__(self) -> None:
        self._entries: dict[RequestKey, Entry] = {}
        self._streams: dict[int, dict[RequestKey, Entry]] = {}  # insertion-ordered: FIFO per stream
        self._turns: deque[int] = deque()  # streams with queued work, next to serve first
        self._by_queue_deadline: _Heap = []
        self._by_deadline: _Heap = []  # only requests with a finite deadline
        self._tiebreak = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: RequestKey) -> bool:
        return key in self._entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(list(self._entries.values()))

    def depth_of(self, stream: int) -> int:
        return len(self._streams.get(stream, ()))

    def add(self, entry: Entry) -> None:
        key = entry.request.key
        self._entries[key] = entry
        stream = self._streams.get(key[0])
        if stream is None:
            stream = self._streams[key[0]] = {}
            self._turns.append(key[0])
        stream[key] = entry
        self._push(entry)

    def add_front(self, entries: Iterable[Entry]) -> None:
        """Puts entries back at the head of their streams, in the order given."""
        by_stream: dict[int, list[Entry]] = {}
        for e in entries:
            by_stream.setdefault(e.request.stream, []).append(e)
        for stream_id, front in by_stream.items():
            old = self._streams.get(stream_id)
            if old is None:
                self._turns.appendleft(stream_id)
            merged = {e.request.key: e for e in front}
            merged.update(old or {})
            self._streams[stream_id] = merged
            for e in front:
                self._entries[e.request.key] = e
                self._push(e)

    def remove(self, key: RequestKey) -> Entry | None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return None
        stream = self._streams[key[0]]
        del stream[key]
        if not stream:
            del self._streams[key[0]]
            self._turns.remove(key[0])
        return entry

    def oldest_enqueued_at(self) -> float:
        """Of the requests at the heads of the streams: the oldest in the queue."""
        return min((next(iter(s.values())).enqueued_at for s in self._streams.values()), default=math.inf)

    def earliest_queue_deadline(self) -> float:
        return self._peek(self._by_queue_deadline)

    def earliest_deadline(self) -> float:
        return self._peek(self._by_deadline)

    def pop_expired(self, now: float) -> list[Entry]:
        """Removes and returns every entry whose queue deadline or own deadline has come."""
        gone = self._pop_while(self._by_queue_deadline, now)
        gone += self._pop_while(self._by_deadline, now)
        return gone

    def pop_urgent(self, now: float, lead: float) -> list[Entry]:
        """Removes and returns every entry with `deadline - lead <= now`."""
        return self._pop_while(self._by_deadline, now, lead=lead)

    def take(self, n: int, now: float, lead: float) -> list[Entry]:
        """Up to `n` entries: the urgent ones (`deadline - lead <= now`) first, earliest
        deadline first, then one per stream in turn."""
        taken = self._pop_while(self._by_deadline, now, lead=lead, limit=n)
        while len(taken) < n and self._turns:
            stream_id = self._turns[0]
            self._turns.rotate(-1)
            key = next(iter(self._streams[stream_id]))
            entry = self.remove(key)
            assert entry is not None
            taken.append(entry)
        self._compact()
        return taken

    # ---- heaps ----------------------------------------------------------------------

    def _push(self, entry: Entry) -> None:
        self._tiebreak += 1
        heapq.heappush(self._by_queue_deadline, (entry.queue_deadline, self._tiebreak, entry))
        if entry.deadline != math.inf:
            heapq.heappush(self._by_deadline, (entry.deadline, self._tiebreak, entry))

    def _alive(self, entry: Entry) -> bool:
        return self._entries.get(entry.request.key) is entry

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
            self.remove(entry.request.key)
            out.append(entry)
        return out

    def _compact(self) -> None:
        for heap in (self._by_queue_deadline, self._by_deadline):
            if len(heap) > 2 * len(self._entries) + 64:
                heap[:] = [item for item in heap if self._alive(item[2])]
                heapq.heapify(heap)
