"""The soak's verdict from its samples: pure, so it is tested without a server.

PASS when, over the samples after warm-up (each taken with the load paused and
nothing in flight, after a garbage collection):
- traced memory's least-squares slope, extrapolated over the whole run, is
  under 1 MiB, and under 1 byte per request;
- RSS is flat: its slope over the second half of the samples, extrapolated
  over the run, is under RSS_BOUND_BYTES, and its last sample is within
  RSS_STEP_BOUND_BYTES of the first. (RSS follows the highest load seen, not
  only what is held: a burst that meets a slow reader raises it in one step,
  early, and it stays. A leak keeps climbing in the second half; a step does
  not.);
- threads and open fds end within THREAD_SLACK / FD_SLACK of their baseline;
- every request got exactly one answer, and the server's counters equal the
  clients' (see `reconcile`).
FAIL gives each reason, with the top growth sites when memory grew.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

MIB = 1024 * 1024
TRACED_BOUND_BYTES = 1 * MIB  # over the run, extrapolated from the slope
BYTES_PER_REQUEST_BOUND = 1.0
# RSS moves with the allocator (arenas kept for reuse, fragmentation) even when
# nothing leaks: 16 MiB over the run is flat for a process of ~100 MiB.
RSS_BOUND_BYTES = 16 * MIB
RSS_STEP_BOUND_BYTES = 32 * MIB
# gRPC's and asyncio's pools may start a thread or an fd late; a leak adds many.
THREAD_SLACK = 2
FD_SLACK = 2

# Client outcome (a status code name) -> the server's counter for it.
OUTCOME_OF_CODE = {
    "OK": "succeeded",
    "RESOURCE_EXHAUSTED": "rejected",
    "UNAVAILABLE": "rejected",
    "DEADLINE_EXCEEDED": "expired",
    "CANCELLED": "cancelled",
    "INVALID_ARGUMENT": "invalid",
    "INTERNAL": "failed",
}
OUTCOMES = ("succeeded", "rejected", "expired", "cancelled", "invalid", "failed")


@dataclass(frozen=True, slots=True)
class Sample:
    t_s: float  # since the soak started
    traced_bytes: int
    rss_bytes: int
    threads: int
    open_fds: int
    requests: int  # the server's requestsReceived so far
    structures: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Slopes:
    traced_per_s: float
    traced_per_request: float
    rss_per_s: float


@dataclass(frozen=True, slots=True)
class Verdict:
    passed: bool
    reasons: tuple[str, ...]  # why it failed; empty on PASS
    slopes: Slopes
    traced_over_run_bytes: float
    rss_over_run_bytes: float
    rss_change_bytes: int


def least_squares_slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """The slope of the least-squares line through (xs, ys); 0 with fewer than 2 distinct xs."""
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx


def slopes(samples: Sequence[Sample]) -> Slopes:
    t = [s.t_s for s in samples]
    traced = [float(s.traced_bytes) for s in samples]
    return Slopes(
        least_squares_slope(t, traced),
        least_squares_slope([float(s.requests) for s in samples], traced),
        least_squares_slope(t, [float(s.rss_bytes) for s in samples]),
    )


def reconcile(server: Mapping[str, int], clients: Mapping[str, int], killed_lost: int) -> list[str]:
    """Server counters against the clients' counts; returns the mismatches.

    Exact, but for the answers of clients killed mid-stream: the server counts
    each request it read from them under the outcome it gave (written, or
    dropped as cancelled), while the killed client counted it `lost`. So each
    server counter may exceed the clients' by at most `killed_lost`, and all of
    them together by exactly what the server read of those lost requests.
    """
    problems = []
    client_outcomes = {o: 0 for o in OUTCOMES}
    for code, outcome in OUTCOME_OF_CODE.items():
        client_outcomes[outcome] += clients.get(code, 0)
    surplus = 0
    for outcome in OUTCOMES:
        extra = server.get(outcome, 0) - client_outcomes[outcome]
        if not 0 <= extra <= killed_lost:
            problems.append(
                f"server counted {server.get(outcome, 0)} {outcome}, clients {client_outcomes[outcome]}"
                f" (may differ only by answers killed clients never read: at most {killed_lost})"
            )
        surplus += extra
    received, sent = server.get("received", 0), clients.get("sent", 0)
    if not sent - killed_lost <= received <= sent:
        problems.append(f"server received {received}, clients sent {sent} ({killed_lost} lost with killed clients)")
    if received != sum(server.get(o, 0) for o in OUTCOMES):
        problems.append(f"server received {received} but answered {sum(server.get(o, 0) for o in OUTCOMES)}")
    if surplus != received - sum(client_outcomes.values()):
        problems.append("server and client outcome totals disagree beyond the killed clients' lost answers")
    return problems


def judge(
    samples: Sequence[Sample],
    run_s: float,
    *,
    answered_once: Sequence[str] = (),
    counter_problems: Sequence[str] = (),
    growth_sites: Sequence[str] = (),
) -> Verdict:
    """`samples` start with the baseline (taken once warm-up ended); `answered_once`
    and `counter_problems` list what the load found wrong; `growth_sites` are
    the top growth sites of the last report, named when memory grew."""
    reasons: list[str] = []
    if len(samples) < 3:
        reasons.append(f"only {len(samples)} samples after warm-up; need at least 3 for a slope")
    s = slopes(samples)
    traced_over_run = s.traced_per_s * run_s
    late = samples[len(samples) // 2 :]
    rss_over_run = slopes(late).rss_per_s * run_s if len(late) >= 2 else 0.0
    rss_change = samples[-1].rss_bytes - samples[0].rss_bytes if samples else 0
    grew = False
    if traced_over_run >= TRACED_BOUND_BYTES:
        reasons.append(
            f"traced memory grows {s.traced_per_s:,.0f} B/s: {traced_over_run / MIB:.2f} MiB over the run "
            f"(bound {TRACED_BOUND_BYTES / MIB:g} MiB)"
        )
        grew = True
    if s.traced_per_request >= BYTES_PER_REQUEST_BOUND:
        reasons.append(f"traced memory grows {s.traced_per_request:.2f} B per request (bound {BYTES_PER_REQUEST_BOUND:g})")
        grew = True
    if rss_over_run >= RSS_BOUND_BYTES:
        reasons.append(
            f"RSS grows in the second half: {rss_over_run / MIB:.1f} MiB over the run by its slope "
            f"(bound {RSS_BOUND_BYTES / MIB:g} MiB)"
        )
    if rss_change >= RSS_STEP_BOUND_BYTES:
        reasons.append(f"RSS grew {rss_change / MIB:.1f} MiB first to last (bound {RSS_STEP_BOUND_BYTES / MIB:g} MiB)")
    if samples:
        first, last = samples[0], samples[-1]
        if last.threads > first.threads + THREAD_SLACK:
            reasons.append(f"threads {first.threads} at the baseline, {last.threads} at the end (slack {THREAD_SLACK})")
        if last.open_fds > first.open_fds + FD_SLACK:
            reasons.append(f"open fds {first.open_fds} at the baseline, {last.open_fds} at the end (slack {FD_SLACK})")
    reasons.extend(answered_once)
    reasons.extend(counter_problems)
    if grew and growth_sites:
        reasons.append("top growth sites: " + "; ".join(growth_sites))
    return Verdict(not reasons, tuple(reasons), s, traced_over_run, rss_over_run, rss_change)
