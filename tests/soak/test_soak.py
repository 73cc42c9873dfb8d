"""The soak itself, at CI size: the real sidecar in its own process, the real client,
the whole load mix; and proof that its detector fails what it must fail."""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path

import pytest

import sidecar.backends.mock as mock
from soak import report
from soak.cli import SHORT
from soak.run import Result, Settings, soak


def quiet(result: Result, phase: str) -> None:
    if result.points:
        s = result.points[-1].sample
        print(f"[{s.t_s:6.1f} s] {phase}: {s.requests:,} requests, traced {s.traced_bytes / 2**20:.2f} MiB, "
              f"RSS {s.rss_bytes / 2**20:.1f} MiB, {s.threads} threads, {s.open_fds} fds")


def run_soak(tmp_path: Path, **settings) -> Result:
    return asyncio.run(soak(Settings(**settings), tmp_path / "server.log", quiet))


@pytest.mark.timeout(600)
def test_short_soak_of_the_whole_mix_passes_and_writes_its_reports(tmp_path):
    result = run_soak(tmp_path, **SHORT)
    written = report.write(result, tmp_path, "pytest short soak")
    v = result.verdict
    assert v is not None
    print(f"\nshort soak: {'PASS' if v.passed else 'FAIL'}; traced {v.slopes.traced_per_s * 60:+,.0f} B/min, "
          f"{v.slopes.traced_per_request:+.4f} B/request; RSS {v.rss_change_bytes / 2**20:+.1f} MiB; reasons {v.reasons}")
    assert v.passed, v.reasons
    assert result.server_exit == 0
    # every scenario ran, and each path it stands for was taken
    assert all(result.tally.iterations[name] > 0 for name in ("churn", "killed", "burst", "edge_cases", "stop_reading"))
    c, server = result.tally.counts, result.counters
    assert c["RESOURCE_EXHAUSTED"] and c["retried"] and c["DEADLINE_EXCEEDED"] and c["INVALID_ARGUMENT"]
    assert c["INTERNAL"] and c["unknown_cancels"] and server["cancelled"]
    md = (tmp_path / "soak-report.md").read_text()
    assert md.startswith("# Soak report: PASS") and "Top growth sites" in md
    assert (tmp_path / "soak-report.json").exists() and written["verdict"] == "PASS"


DETECTOR = {"duration_s": 45.0, "interval_s": 4.0, "warmup_s": 12.0}


@pytest.mark.timeout(300)
def test_a_planted_per_batch_leak_fails_and_is_named_by_file_and_line(tmp_path):
    # No stalls in this mix: a replaced instance would take its kept bytes with it.
    result = run_soak(tmp_path, model_uri="mock:?base_ms=1&per_item_ms=0.01&fail_every=700&leak_bytes=4096", **DETECTOR)
    v = result.verdict
    assert v is not None and not v.passed
    line = next(i for i, text in enumerate(inspect.getsource(mock).splitlines(), 1) if "self._kept.append" in text)
    planted = f"sidecar/backends/mock.py:{line}"
    print(f"\nplanted leak: {v.reasons}")
    assert any("per request" in r or "over the run" in r for r in v.reasons)
    assert planted in v.reasons[-1]  # the top growth sites, named


@pytest.mark.timeout(300)
def test_kept_threads_fail_on_the_thread_count(tmp_path):
    # Every 40th batch of an instance hangs for good: each is given up on and
    # replaced, and its thread is kept; max-hung is set high so it never turns fatal.
    result = run_soak(
        tmp_path, model_uri="mock:?base_ms=1&per_item_ms=0.01&hang_every=400",
        serve_args=("--backend-max-hung", "1000", "--backend-timeout", "200 ms"), **DETECTOR,
    )
    v = result.verdict
    assert v is not None and not v.passed
    print(f"\nkept threads: {v.reasons}")
    assert any(r.startswith("threads ") for r in v.reasons)
