"""A backend's own options: `sidecar.backend.<name>.<option>` config keys (a YAML
file or `-D`), over the model URI's query string (`onnx:/m.onnx?threads=2`).

Values arrive as text; the getters parse them and fail with a BackendError that
names the option, the value and what was expected, so a typo stops start-up with
a message instead of a model that runs with a default nobody chose.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from urllib.parse import parse_qsl, urlsplit

from sidecar.backends.base_errors import BackendError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class BackendOptions(Mapping[str, str]):
    def __init__(self, backend: str, values: Mapping[str, str] | None = None) -> None:
        self.backend = backend
        self._values = {str(k): str(v) for k, v in (values or {}).items()}
        self.used: set[str] = set()

    @classmethod
    def of(cls, backend: str, model_uri: str, configured: Mapping[str, str] | None = None) -> BackendOptions:
        """The URI's query, then the configured options over it."""
        query = dict(parse_qsl(urlsplit(model_uri).query, keep_blank_values=True)) if "?" in model_uri else {}
        return cls(backend, {**query, **(configured or {})})

    def __getitem__(self, key: str) -> str:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def _key(self, option: str) -> str:
        return f"sidecar.backend.{self.backend}.{option}"

    def text(self, option: str, default: str | None = None) -> str | None:
        self.used.add(option)
        return self._values.get(option, default)

    def integer(self, option: str, default: int, minimum: int | None = None) -> int:
        raw = self.text(option)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise BackendError(f"{self._key(option)}: {raw!r} is not an integer") from None
        if minimum is not None and value < minimum:
            raise BackendError(f"{self._key(option)}: {value} is below the least allowed, {minimum}")
        return value

    def flag(self, option: str, default: bool) -> bool:
        raw = self.text(option)
        if raw is None:
            return default
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise BackendError(f"{self._key(option)}: {raw!r} is not true or false")

    def choice(self, option: str, default: str, allowed: tuple[str, ...]) -> str:
        raw = self.text(option, default)
        assert raw is not None
        if raw not in allowed:
            raise BackendError(f"{self._key(option)}: {raw!r} is not one of {', '.join(allowed)}")
        return raw

    def items_list(self, option: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        """A comma-separated list."""
        raw = self.text(option)
        if raw is None:
            return default
        return tuple(p.strip() for p in raw.split(",") if p.strip())

    def unknown(self, known: set[str]) -> list[str]:
        return sorted(set(self._values) - known)
