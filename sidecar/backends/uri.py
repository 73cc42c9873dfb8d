"""The file a file-backed backend's model URI names."""

from __future__ import annotations

from urllib.parse import urlsplit
from urllib.request import url2pathname


def file_path(model_uri: str, scheme: str) -> str | None:
    """A plain path, `file://...` (percent-decoded) or `<scheme>:path`, with the
    query (the backend's options) dropped; None for any other scheme. A plain
    path is not percent-decoded: it is a name, not a URL."""
    parts = urlsplit(model_uri)
    if parts.scheme == "file":
        return url2pathname(parts.path)
    if parts.scheme in ("", scheme):
        return parts.path
    return None
