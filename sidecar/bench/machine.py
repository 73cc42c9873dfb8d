"""Where a run was made: the CPU, cores, versions and commit, printed first and kept in
the JSON, since figures from a small shared machine only compare with their own kind."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

_SOURCE = Path(__file__).resolve().parent  # a checkout's git knows the commit; a wheel's does not


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=_SOURCE, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def commit() -> str:
    """The short commit, `-dirty` if tracked files changed; 'unknown' outside a checkout."""
    head = _git("rev-parse", "--short", "HEAD")
    if not head:
        return "unknown"
    return head + ("-dirty" if _git("status", "--porcelain", "--untracked-files=no") else "")


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                        platform.processor())
    except OSError:
        return platform.processor() or "unknown"


def machine() -> dict[str, str]:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 0)
    return {
        "cpu": _cpu(),
        "cores": str(cores),
        "python": platform.python_version(),
        "grpcio": _version("grpcio"),
        "uvloop": _version("uvloop"),
        "commit": commit(),
    }


def line(info: dict[str, str]) -> str:
    return (f"machine: {info['cpu']}, {info['cores']} cores, Python {info['python']}, grpcio {info['grpcio']}, "
            f"uvloop {info['uvloop']}; commit {info['commit']}")
