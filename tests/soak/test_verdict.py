"""The soak's verdict, on made-up samples: slopes, bounds, reconciliation."""

from __future__ import annotations

import pytest

from soak.verdict import MIB, RSS_BOUND_BYTES, RSS_STEP_BOUND_BYTES, Sample, judge, least_squares_slope, reconcile


def flat(n: int = 10, *, traced: int = 10 * MIB, rss: int = 100 * MIB, per_s: float = 0.0, rss_per_s: float = 0.0,
         threads: tuple[int, int] = (20, 20), fds: tuple[int, int] = (30, 30)) -> list[Sample]:
    """n samples 10 s apart, 1000 requests per second."""
    out = []
    for i in range(n):
        last = i == n - 1
        out.append(Sample(10.0 * i, int(traced + per_s * 10 * i), int(rss + rss_per_s * 10 * i),
                          threads[1] if last else threads[0], fds[1] if last else fds[0], 10_000 * i))
    return out


def test_least_squares_slope_of_a_line_and_of_noise_around_it():
    assert least_squares_slope([0, 1, 2, 3], [5, 7, 9, 11]) == pytest.approx(2.0)
    assert least_squares_slope([0, 1, 2, 3], [5, 8, 8, 11]) == pytest.approx(1.8)
    assert least_squares_slope([1], [1]) == 0.0 and least_squares_slope([2, 2], [1, 5]) == 0.0


def test_flat_memory_passes():
    v = judge(flat(), run_s=600)
    assert v.passed and v.reasons == ()


def test_traced_growth_extrapolating_past_1_mib_over_the_run_fails_and_names_the_sites():
    v = judge(flat(per_s=2000), run_s=600, growth_sites=["mock.py:120 +1,200,000 B"])
    assert not v.passed
    assert any("MiB over the run" in r for r in v.reasons)
    assert any("per request" in r for r in v.reasons)  # 2000 B/s at 1000 req/s: 2 B per request
    assert v.reasons[-1] == "top growth sites: mock.py:120 +1,200,000 B"


def test_growth_under_a_byte_per_request_and_1_mib_per_run_passes():
    v = judge(flat(per_s=500), run_s=600)  # 0.5 B per request, 0.29 MiB over the run
    assert v.passed, v.reasons
    assert v.slopes.traced_per_request == pytest.approx(0.5)


def test_rss_growth_past_its_bound_fails():
    v = judge(flat(rss_per_s=RSS_BOUND_BYTES / 300), run_s=600)
    assert not v.passed and any(r.startswith("RSS grows in the second half") for r in v.reasons)


def test_an_early_rss_step_that_stays_flat_after_passes_but_not_a_huge_one():
    samples = flat(10)
    stepped = [s if i < 3 else Sample(s.t_s, s.traced_bytes, s.rss_bytes + 17 * MIB, s.threads, s.open_fds, s.requests)
               for i, s in enumerate(samples)]
    assert judge(stepped, run_s=600).passed
    huge = [s if i < 3 else Sample(s.t_s, s.traced_bytes, s.rss_bytes + RSS_STEP_BOUND_BYTES, s.threads, s.open_fds,
                                   s.requests) for i, s in enumerate(samples)]
    assert any("first to last" in r for r in judge(huge, run_s=600).reasons)


def test_threads_or_fds_that_do_not_return_to_the_baseline_fail():
    assert any("threads" in r for r in judge(flat(threads=(20, 30)), run_s=600).reasons)
    assert any("open fds" in r for r in judge(flat(fds=(30, 40)), run_s=600).reasons)
    assert judge(flat(threads=(20, 22), fds=(30, 32)), run_s=600).passed  # within the slack


def test_too_few_samples_cannot_pass():
    assert not judge(flat(2), run_s=600).passed


def test_problems_from_the_load_fail_the_verdict():
    v = judge(flat(), run_s=600, answered_once=["stop_reading: 3 unanswered"], counter_problems=["server counted 5 x"])
    assert v.reasons == ("stop_reading: 3 unanswered", "server counted 5 x")


SERVER = {"received": 100, "succeeded": 80, "rejected": 10, "expired": 5, "cancelled": 3, "invalid": 1, "failed": 1}
CLIENTS = {"sent": 100, "OK": 80, "RESOURCE_EXHAUSTED": 8, "UNAVAILABLE": 2, "DEADLINE_EXCEEDED": 5, "CANCELLED": 3,
           "INVALID_ARGUMENT": 1, "INTERNAL": 1}


def test_counters_that_match_reconcile():
    assert reconcile(SERVER, CLIENTS, killed_lost=0) == []


def test_a_mismatch_is_named_with_both_counts():
    problems = reconcile({**SERVER, "succeeded": 81, "received": 101}, CLIENTS, killed_lost=0)
    assert any("server counted 81 succeeded, clients 80" in p for p in problems)


def test_answers_killed_clients_never_read_may_differ_by_at_most_what_they_lost():
    clients = {**CLIENTS, "OK": 77, "lost": 3}  # a killed client read 77 of the 80 answers written
    assert reconcile(SERVER, clients, killed_lost=3) == []
    assert reconcile(SERVER, clients, killed_lost=2) != []


def test_command_line_settings_default_to_30_minutes_and_scale_the_warm_up():
    from soak.cli import _parser, settings_from

    full = settings_from(_parser().parse_args([]))
    assert (full.duration_s, full.interval_s, full.warmup_s) == (1800, 30, 120)
    assert settings_from(_parser().parse_args(["--duration", "90 s"])).warmup_s == 30
    short = settings_from(_parser().parse_args(["--short"]))
    assert (short.duration_s, short.interval_s, short.warmup_s) == (150, 5, 60)
