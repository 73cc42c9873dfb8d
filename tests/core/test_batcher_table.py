"""docs/architecture.md's batcher table is TRANSITIONS, the table the code runs."""

from __future__ import annotations

from pathlib import Path

from sidecar.core.batcher import AFTER_ANY_EVENT, ERROR, TRANSITIONS, State

DOC = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"
# Column heads as the doc abbreviates them, in the doc's order.
COLUMNS = {
    "RequestsAdmitted": "RequestsAdmitted", "TimerFired": "TimerFired", "ExecutorFree": "ExecutorFree",
    "ExecutorDown": "Down", "ExecutorUp": "Up", "ExecutorLoadFailed": "LoadFailed", "ExecutorReleased": "Released",
    "Withdraw": "Withdraw", "Drain": "Drain",
}


def _states(to: tuple) -> str:
    names = [ERROR if t == ERROR else t.name for t in to]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def rendered() -> list[str]:
    """The table as the doc must show it, one markdown line per row."""
    events = {e.__name__: e for (_, e) in TRANSITIONS}
    lines = ["| state \\ event | " + " | ".join(COLUMNS.values()) + " |", "|---|" + "---|" * len(COLUMNS)]
    for state in State:
        cells = []
        for name in COLUMNS:
            cell = TRANSITIONS[(state, events[name])]
            cells.append(_states(cell.to) + (f" [{cell.actions}]" if cell.actions else ""))
        lines.append(f"| {state.name} | " + " | ".join(cells) + " |")
    return lines


def test_every_state_has_a_cell_for_every_event():
    events = {e for (_, e) in TRANSITIONS}
    assert len(events) == len(COLUMNS)
    assert set(TRANSITIONS) == {(s, e) for s in State for e in events}
    assert set(AFTER_ANY_EVENT) == {State.IDLE, State.COLLECTING, State.DRAINING}  # the live states


def test_the_doc_shows_the_table_the_code_runs():
    lines = DOC.read_text().splitlines()
    head = rendered()[0]
    assert head in lines, f"docs/architecture.md has no batcher table headed {head!r}"
    start = lines.index(head)
    shown = lines[start : start + len(State) + 2]
    assert shown == rendered(), "docs/architecture.md's batcher table differs from TRANSITIONS; write it as:\n" + "\n".join(rendered())


def test_a_replaced_executors_late_free_after_the_drain_closed_is_on_the_table():
    # Draining, the last batch hangs; the watchdog fails it and the batcher closes.
    # Then the hung backend returns: its free is stale, ignored, and within the table.
    from sidecar.core.batcher import Batcher, BatchLimits, Drain, ExecutorFree, OffTable, RequestsAdmitted, TimerFired
    from tests.factories import admitted, request

    b = Batcher(BatchLimits(max_batch_size=4, batch_timeout_s=0.0, executors=1, max_inflight_per_executor=1,
                            backend_timeout_s=1.0, max_hung=2))
    b.handle(RequestsAdmitted(admitted([request(1, at=0.0)], 0.0, 10.0)), 0.0)
    b.handle(Drain(), 0.1)
    b.handle(TimerFired(1.0), 1.0)
    assert b.state is State.CLOSED
    actions = b.handle(ExecutorFree(0, 0, 1.0), 1.001)
    assert b.state is State.CLOSED and not [a for a in actions if isinstance(a, OffTable)]
