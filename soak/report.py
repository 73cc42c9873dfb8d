"""The soak's reports: soak-report.json (everything), soak-report.md (for people),
soak-report.png (traced memory, RSS and throughput over time; needs matplotlib)."""

from __future__ import annotations

import json
import platform
import subprocess
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from soak.run import Result
from soak.verdict import (
    BYTES_PER_REQUEST_BOUND,
    FD_SLACK,
    MIB,
    OUTCOME_OF_CODE,
    OUTCOMES,
    RSS_BOUND_BYTES,
    RSS_STEP_BOUND_BYTES,
    THREAD_SLACK,
    TRACED_BOUND_BYTES,
)


def machine() -> dict[str, str]:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    cpu = next((line.split(":", 1)[1].strip() for line in _read("/proc/cpuinfo").splitlines()
                if line.startswith("model name")), platform.processor())
    return {"cpu": cpu, "cores": str(_cores()), "python": platform.python_version(), "commit": commit or "unknown"}


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 0)


def as_json(result: Result, command: str) -> dict[str, Any]:
    v = result.verdict
    assert v is not None
    return {
        "verdict": "PASS" if v.passed else "FAIL",
        "reasons": list(v.reasons),
        "command": command,
        "machine": machine(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(result.started_at)),
        "elapsed_s": round(result.elapsed_s, 1),
        "settings": asdict(result.settings),
        "slopes": {
            "traced_bytes_per_s": v.slopes.traced_per_s,
            "traced_bytes_per_minute": v.slopes.traced_per_s * 60,
            "traced_bytes_per_request": v.slopes.traced_per_request,
            "rss_bytes_per_s": v.slopes.rss_per_s,
            "traced_over_run_bytes": v.traced_over_run_bytes,
            "rss_over_run_bytes": v.rss_over_run_bytes,
            "rss_change_bytes": v.rss_change_bytes,
        },
        "bounds": {
            "traced_over_run_bytes": TRACED_BOUND_BYTES, "bytes_per_request": BYTES_PER_REQUEST_BOUND,
            "rss_bytes": RSS_BOUND_BYTES, "rss_step_bytes": RSS_STEP_BOUND_BYTES, "thread_slack": THREAD_SLACK, "fd_slack": FD_SLACK,
        },
        "client_counts": dict(result.tally.counts),
        "killed_client_lost": result.tally.killed_lost,
        "server_counters": result.counters,
        "iterations": dict(result.tally.iterations),
        "server_exit": result.server_exit,
        "samples": [
            {**asdict(p.sample), "warmup": p.warmup, "growth": [list(g) for g in p.growth]} for p in result.points
        ],
    }


def markdown(report: dict[str, Any]) -> str:
    s, b, m = report["slopes"], report["bounds"], report["machine"]
    samples = report["samples"]
    measured = [x for x in samples if not x["warmup"]]
    first, last = (measured[0], measured[-1]) if measured else (None, None)
    lines = [
        f"# Soak report: {report['verdict']}",
        "",
        f"- command: `{report['command']}`",
        f"- machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}; commit {m['commit']}",
        f"- started {report['started_at']}, ran {report['elapsed_s']:.0f} s "
        f"({report['settings']['duration_s']:.0f} s of load, warm-up {report['settings']['warmup_s']:.0f} s, "
        f"a sample every {report['settings']['interval_s']:.0f} s, seed {report['settings']['seed']})",
        "",
    ]
    if report["reasons"]:
        lines += ["## Why it failed", ""] + [f"- {r}" for r in report["reasons"]] + [""]
    lines += [
        "## Slopes after warm-up (least squares over the paused samples)",
        "",
        "| figure | value | bound |",
        "|---|---:|---:|",
        f"| traced memory per minute | {s['traced_bytes_per_minute']:,.0f} B | |",
        f"| traced memory over the run | {s['traced_over_run_bytes'] / MIB:,.3f} MiB | < {b['traced_over_run_bytes'] / MIB:g} MiB |",
        f"| traced memory per request | {s['traced_bytes_per_request']:.4f} B | < {b['bytes_per_request']:g} B |",
        f"| RSS slope per minute (all samples) | {s['rss_bytes_per_s'] * 60 / MIB:,.3f} MiB | |",
        f"| RSS over the run (slope of the second half) | {s['rss_over_run_bytes'] / MIB:,.2f} MiB | < {b['rss_bytes'] / MIB:g} MiB |",
        f"| RSS first to last | {s['rss_change_bytes'] / MIB:,.2f} MiB | < {b['rss_step_bytes'] / MIB:g} MiB |",
    ]
    if first and last:
        lines += [
            f"| threads baseline -> end | {first['threads']} -> {last['threads']} | +{b['thread_slack']} |",
            f"| open fds baseline -> end | {first['open_fds']} -> {last['open_fds']} | +{b['fd_slack']} |",
            f"| requests after warm-up | {last['requests'] - first['requests']:,} | |",
        ]
    lines += ["", "## Top growth sites (last sample against the baseline)", "", "| site | size | blocks |", "|---|---:|---:|"]
    lines += [f"| `{site}` | {size:+,} B | {count:+,} |" for site, size, count in (samples[-1]["growth"] if samples else [])]
    server, clients = report["server_counters"], report["client_counts"]
    lines += ["", "## Requests by outcome: server counters and the clients' counts", "",
              "| outcome | server | clients |", "|---|---:|---:|"]
    lines.append(f"| received / sent | {server.get('received', 0):,} | {clients.get('sent', 0):,} |")
    for outcome in OUTCOMES:
        codes = [c for c, o in OUTCOME_OF_CODE.items() if o == outcome]
        lines.append(f"| {outcome} ({', '.join(codes)}) | {server.get(outcome, 0):,} | {sum(clients.get(c, 0) for c in codes):,} |")
    lines.append(f"| lost by clients killed mid-stream | | {report['killed_client_lost']:,} |")
    lines.append(f"| retried / unknown cancels reported | | {clients.get('retried', 0):,} / {clients.get('unknown_cancels', 0):,} |")
    if first and last:
        lines += ["", "## Long-lived structures (baseline -> end)", "", "| structure | baseline | end |", "|---|---:|---:|"]
        lines += [f"| `{k}` | {first['structures'].get(k, 0)} | {v} |" for k, v in sorted(last["structures"].items())]
    lines += ["", "Scenario iterations: " + ", ".join(f"{k} {v}" for k, v in sorted(report["iterations"].items())), ""]
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> bool:
    """Traced memory, RSS and throughput over time; False if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    samples = report["samples"]
    t = [x["t_s"] / 60 for x in samples]
    fig, (ax1, ax2, ax3) = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    ax1.plot(t, [x["traced_bytes"] / MIB for x in samples], marker=".")
    ax1.set_ylabel("traced (MiB)")
    ax2.plot(t, [x["rss_bytes"] / MIB for x in samples], marker=".", color="tab:orange")
    ax2.set_ylabel("RSS (MiB)")
    rates = [0.0] + [
        (b["requests"] - a["requests"]) / max(1e-9, b["t_s"] - a["t_s"]) for a, b in zip(samples, samples[1:])
    ]
    ax3.plot(t, rates, marker=".", color="tab:green")
    ax3.set_ylabel("requests/s")
    ax3.set_xlabel("minutes")
    warm = [x["t_s"] / 60 for x in samples if x["warmup"]]
    for ax in (ax1, ax2, ax3):
        if warm:
            ax.axvspan(0, max(warm), color="grey", alpha=0.15, label="warm-up")
        ax.grid(alpha=0.3)
    fig.suptitle(f"gpu-sidecar soak: {report['verdict']} ({report['machine']['commit']})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def write(result: Result, out: Path, command: str) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    report = as_json(result, command)
    (out / "soak-report.json").write_text(json.dumps(report, indent=2))
    (out / "soak-report.md").write_text(markdown(report))
    report["plot"] = plot(report, out / "soak-report.png")
    return report
