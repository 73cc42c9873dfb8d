"""The backend error type, apart so that options and backends share it without a cycle."""

from __future__ import annotations


class BackendError(RuntimeError):
    """A backend could not load or run; the message is shown to operators and clients."""
