"""Skips for tests that need an optional package, and the CI environment where they must run.

CI runs two environments (.ci/run): dev, with the newest releases, and flink, with
PyFlink and Beam's older grpcio and protobuf. The flink one sets
SIDECAR_TESTS_REQUIRE=flink,protos: there a missing package fails those tests
instead of skipping them, so a skip cannot hide that they never ran.
"""

from __future__ import annotations

import os

import pytest

REQUIRED = frozenset(filter(None, os.environ.get("SIDECAR_TESTS_REQUIRE", "").split(",")))


def need(what: str, missing: str | None) -> None:
    """Skips the test (or module) with `missing` as the reason, unless `what` is required here."""
    if missing is None:
        return
    if what in REQUIRED:
        pytest.fail(f"SIDECAR_TESTS_REQUIRE has {what!r}, but {missing}", pytrace=False)
    pytest.skip(missing, allow_module_level=True)
