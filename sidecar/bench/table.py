"""The tables printed at the end: rows built here as plain strings, drawn with rich
when it is installed and as fixed-width text when it is not."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

from sidecar.bench.compare import Comparison
from sidecar.bench.results import Result

NA = "n/a"


@dataclass(frozen=True, slots=True)
class Table:
    title: str
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    numeric: tuple[bool, ...]  # right-aligned columns


def rps(v: float | None) -> str:
    return NA if v is None else f"{v:,.0f}"


def ms(v: float | None) -> str:
    return NA if v is None else f"{v:.2f}"


def times(v: float | None) -> str:
    return NA if v is None else f"{v:.2f}"


def errors(r: Result) -> str:
    return ", ".join(f"{code} {n:,}" for code, n in r.errors.items()) or "0"


def results_table(results: Sequence[Result]) -> Table:
    headers = ("case", "target", "offered req/s", "achieved req/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms",
               "mean batch", "errors", "held in client", "CPU µs/req")
    rows = tuple(
        (r.case, r.target, rps(r.offered_rps), rps(r.achieved_rps), ms(r.p50_ms), ms(r.p90_ms), ms(r.p99_ms),
         ms(r.p999_ms), NA if r.mean_batch is None else f"{r.mean_batch:.1f}", errors(r), f"{r.held_in_client:,}",
         NA if r.cpu_us_per_req is None else f"{r.cpu_us_per_req:.1f}")
        for r in results
    )
    return Table("results", headers, rows, (False, False) + (True,) * 8 + (True, True))


def ratios_table(comparisons: Sequence[Comparison]) -> Table:
    headers = ("case", "÷ echo throughput", "÷ compute ceiling", "compute ceiling", "CPU/req ÷ echo's",
               "÷ mock bound")
    rows = []
    for c in comparisons:
        q = c.ratios()
        ceiling = (f"{c.ceiling.rps:,.0f} req/s (batch {c.ceiling.batch_size}, {c.ceiling.infer_ms:.3f} ms"
                   f" × {c.ceiling.instances})") if c.ceiling else (c.ceiling_note or NA)
        rows.append((c.case, times(q["throughput_vs_echo"]), times(q["throughput_vs_compute_ceiling"]), ceiling,
                     times(q["cpu_per_request_vs_echo"]), times(q["throughput_vs_mock_bound"])))
    return Table("the sidecar against its ceilings", headers, tuple(rows), (False, True, True, False, True, True))


def plain(table: Table) -> str:
    widths = [max(len(h), *(len(r[i]) for r in table.rows)) if table.rows else len(h)
              for i, h in enumerate(table.headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, table.numeric)).rstrip()

    out = [table.title, line(table.headers), line(["-" * w for w in widths])]
    out += [line(r) for r in table.rows]
    return "\n".join(out)


def show(table: Table, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    try:
        from rich.console import Console
        from rich.table import Table as RichTable
    except ImportError:
        print(plain(table), file=out, flush=True)
        return
    t = RichTable(title=table.title)
    for h, num in zip(table.headers, table.numeric):
        t.add_column(h, justify="right" if num else "left", no_wrap=not num)
    for row in table.rows:
        t.add_row(*row)
    # Off a terminal rich assumes 80 columns, too few for these tables: logs get room.
    console = Console(file=out)
    if not console.is_terminal:
        console = Console(file=out, width=200)
    console.print(t)
