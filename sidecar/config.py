"""Every limit and default of the sidecar, in one frozen object.

Each field carries its Flink-style key (`sidecar.batch.max-size`), the kind of
value it takes, and what it means; docs/configuration.md lists the same table
(a test keeps the two in step). Where the values come from (defaults, a YAML
file, GPU_SIDECAR_* variables, flags) is config_loader.py's job.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from sidecar.core.admission import AdmissionLimits
from sidecar.core.batcher import BatchLimits, Dispatch
from sidecar.endpoint import grpc_address
from sidecar.units import DURATION_SYNTAX, SIZE_SYNTAX, format_duration, format_size, parse_duration, parse_size


@dataclass(frozen=True, slots=True)
class Kind:
    """What values a key takes: how to read one from text, and which are allowed."""

    read: Callable[[Any], Any]  # text (or a YAML scalar) -> value; raises ValueError
    ok: Callable[[Any], bool]  # is this typed value allowed?
    allowed: str
    show: Callable[[Any], str] = str

    def parse(self, raw: Any) -> Any:
        value = self.read(raw)
        if not self.ok(value):
            raise ValueError(raw)
        return value


def _read_int(raw: Any) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise ValueError(raw)
    text = str(raw).strip()
    if not re.fullmatch(r"-?[0-9]+", text):  # not int(): it also takes "1_000" and non-ASCII digits
        raise ValueError(raw)
    return int(text)


def _integer(low: int, high: int | None = None) -> Kind:
    return Kind(
        _read_int,
        lambda v: isinstance(v, int) and v >= low and (high is None or v <= high),
        f"an integer >= {low}" + (f" and <= {high}" if high is not None else ""),
    )


def _duration(positive: bool) -> Kind:
    return Kind(
        lambda raw: parse_duration(str(raw)),
        lambda v: isinstance(v, int | float) and (v > 0 if positive else v >= 0),
        ("a positive duration: " if positive else "a duration: ") + DURATION_SYNTAX,
        format_duration,
    )


def _choice(*options: str) -> Kind:
    return Kind(str, lambda v: v in options, "one of " + ", ".join(options))


def _names(*options: str) -> Kind:
    """A comma-separated list (or a YAML list) of distinct names from `options`; may be empty."""

    def read(raw: Any) -> tuple[str, ...]:
        items = raw if isinstance(raw, list | tuple) else str(raw).split(",")
        return tuple(str(i).strip() for i in items if str(i).strip())

    return Kind(
        read,
        lambda v: isinstance(v, tuple) and len(set(v)) == len(v) and all(i in options for i in v),
        "a comma-separated list of distinct names from: " + ", ".join(options) + " (or nothing)",
        lambda v: ", ".join(v),
    )


def _endpoint_ok(value: Any) -> bool:
    try:
        grpc_address(str(value))
    except ValueError:
        return False
    return True


TEXT = Kind(str, lambda v: isinstance(v, str), "any text")
NAME = Kind(str, lambda v: isinstance(v, str) and re.fullmatch(r"[A-Za-z0-9_.-]{1,128}", v) is not None,
            "a name of 1-128 letters, digits, '_', '.' or '-' (it appears in URL paths)")
# Shown as set or not, never as itself (`gpu-sidecar config --print`, logs).
SECRET = Kind(str, lambda v: isinstance(v, str), "any text (shown as (set) or nothing)", lambda v: "(set)" if v else "")
ENDPOINT = Kind(str, _endpoint_ok, "host:port or unix:///absolute/path")
SIZE = Kind(lambda raw: parse_size(str(raw)), lambda v: isinstance(v, int) and v > 0, "a positive size: " + SIZE_SYNTAX, format_size)


def key(name: str, kind: Kind, doc: str, default: Any) -> Any:
    return field(default=default, metadata={"key": name, "kind": kind, "doc": doc})


@dataclass(frozen=True, slots=True)
class SidecarConfig:
    endpoint: str = key("sidecar.rpc.endpoint", ENDPOINT, "where gRPC listens: host:port (port 0 picks a free one) or unix:///path", "127.0.0.1:7651")
    max_message_bytes: int = key("sidecar.rpc.max-message-size", SIZE, "largest gRPC message either way (a request message may pack many requests)", 64 * 1024 * 1024)
    response_pack_bytes: int = key("sidecar.rpc.response-pack-size", SIZE, "response messages are packed up to this size, below the 4 MiB receive limit grpc-java, -go and -js clients have by default; never above sidecar.rpc.max-message-size; a single larger response travels alone", 4080 * 1024)
    max_concurrent_streams: int = key("sidecar.rpc.max-concurrent-streams", _integer(1), "concurrent calls one client connection may have open (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS)", 256)
    max_outstanding: int = key("sidecar.stream.max-outstanding", _integer(1), "requests one stream may have open (read and not yet answered on the wire); at this window the server stops reading the stream, so HTTP/2 flow control holds its client back and a client that does not read costs at most this many answers", 1024)
    backend: str = key("sidecar.model.backend", TEXT, "backend name: mock, cpu, or one registered under the gpu_sidecar.backends entry-point group", "mock")
    model_uri: str = key("sidecar.model.uri", TEXT, "what the backend loads; for mock its options (mock:?base_ms=2&per_item_ms=0.02), for cpu a seed (cpu:?seed=0) or an .npz path", "")
    model_name: str = key("sidecar.model.name", NAME, "the model's name to KServe clients (/v2/models/<name>, tritonclient, Flink's Triton provider)", "model")
    model_version: int = key("sidecar.model.version", _integer(1), "the model's version to KServe clients; requests may name it or `latest`", 1)
    instances: int = key("sidecar.model.instances", _integer(1), "backend instances, each with its own executor thread", 1)
    max_batch_size: int = key("sidecar.batch.max-size", _integer(1), "largest batch; the smaller of this and the backend's own limit is used", 32)
    batch_timeout_s: float = key("sidecar.batch.timeout", _duration(False), "the batch window, counted from the oldest queued request", 0.002)
    batch_dispatch: str = key("sidecar.batch.dispatch", _choice(*(d.value for d in Dispatch)), "eager-when-idle: an instance with no batch in flight takes what is queued at once, and a busy one's next batch collects until it is due to run dry (the window stands in until a batch is timed); window: a partial batch waits out the window wherever it goes", Dispatch.EAGER_WHEN_IDLE.value)
    max_inflight_batches: int = key("sidecar.batch.max-inflight", _integer(1), "batches one executor holds at once; 2 keeps the next batch ready so the backend never idles for a round trip", 2)
    max_queue_length: int = key("sidecar.queue.max-length", _integer(1), "requests that may wait; beyond it RESOURCE_EXHAUSTED at once", 4096)
    max_per_stream: int = key("sidecar.queue.max-per-stream", _integer(0), "requests one stream may have queued; beyond it RESOURCE_EXHAUSTED, so one hot stream cannot fill the queue while others wait; 0 means no per-stream limit", 0)
    max_queue_wait_s: float = key("sidecar.queue.max-wait", _duration(True), "longest a request may wait for dispatch; then DEADLINE_EXCEEDED", 1.0)
    backend_timeout_s: float = key("sidecar.backend.timeout", _duration(True), "a batch running longer than this fails DEADLINE_EXCEEDED and its backend instance is replaced", 30.0)
    max_hung: int = key("sidecar.backend.max-hung", _integer(0), "backend instances given up on as hung whose calls never returned that the sidecar tolerates; one more and it turns NOT_READY and exits with code 4 so its orchestrator restarts it", 2)
    reload_attempts: int = key("sidecar.backend.reload-attempts", _integer(1), "loads tried, with backoff, for a replacement backend instance before that instance is given up; with no instance left the sidecar exits with code 4", 5)
    health_host: str = key("sidecar.health.host", TEXT, "address the health HTTP endpoint binds", "0.0.0.0")
    health_port: int = key("sidecar.health.port", _integer(0, 65535), "HTTP port for GET /health (READY 200 / NOT_READY 503); 0 picks a free one", 7652)
    kserve_protocols: tuple[str, ...] = key("sidecar.kserve.protocols", _names("grpc", "http"), "KServe v2 front ends to serve: grpc (inference.GRPCInferenceService beside GpuSidecar on sidecar.rpc.endpoint), http (REST on its own port); docs/kserve.md", ("grpc", "http"))
    kserve_http_host: str = key("sidecar.kserve.http.host", TEXT, "address the KServe HTTP front end binds; it takes work, so only this host by default (0.0.0.0 for other pods)", "127.0.0.1")
    kserve_http_port: int = key("sidecar.kserve.http.port", _integer(0, 65535), "port of the KServe HTTP front end (Triton's default); 0 picks a free one", 8000)
    kserve_http_token: str = key("sidecar.kserve.http.bearer-token", SECRET, "when set, KServe HTTP requests (all but /v2/health/*) must carry `Authorization: Bearer <this>`, else 401", "")
    kserve_http_max_json: int = key("sidecar.kserve.http.max-json-size", SIZE, "largest JSON part of a KServe HTTP request (after decompression), else 400: the server's one event loop parses it; large tensors go as binary data, up to sidecar.rpc.max-message-size", 8 * 1024 * 1024)
    kserve_http_max_inflight: int = key("sidecar.kserve.http.max-inflight", _integer(1), "KServe HTTP infer requests served at once; one more is answered 503 with Retry-After before its body is read, so bodies held are at most this x sidecar.rpc.max-message-size", 1024)
    drain_timeout_s: float = key("sidecar.drain.timeout", _duration(False), "on SIGTERM, how long in-flight requests may take to finish; the rest get UNAVAILABLE", 30.0)
    metrics_reporters: tuple[str, ...] = key("sidecar.metrics.reporters", _names("prom", "log"), "metric reporters to run: prom (Prometheus endpoint), log (all metrics in the log every interval)", ("prom",))
    prometheus_host: str = key("sidecar.metrics.prometheus.host", TEXT, "address the Prometheus endpoint binds", "0.0.0.0")
    prometheus_port: int = key("sidecar.metrics.prometheus.port", _integer(0, 65535), "HTTP port of the Prometheus endpoint (as Flink's reporter); 0 picks a free one", 9249)
    metrics_log_interval_s: float = key("sidecar.metrics.log.interval", _duration(True), "how often the log reporter writes all metrics", 60.0)
    histogram_window: int = key("sidecar.metrics.histogram.window", _integer(1), "values each histogram keeps for its statistics (Flink's latency history is 128)", 128)
    tm_id: str = key("sidecar.metrics.tm-id", TEXT, "the tm_id scope variable (label); empty means this host's name", "")
    log_format: str = key("sidecar.log.format", _choice("text", "json"), "text: one key=value line per event; json: one JSON object per line", "text")
    log_level: str = key("sidecar.log.level", _choice("DEBUG", "INFO", "WARNING", "ERROR"), "the least severe level logged", "INFO")
    # `sidecar.backend.<name>.<option>` keys (a file or -D): each backend's own
    # options, given to it as text (sidecar/backends/options.py). Not a key itself.
    backend_options: tuple[tuple[str, str, str], ...] = field(default=(), metadata={})

    def __post_init__(self) -> None:
        problems = []
        for f in fields(self):
            if "key" not in f.metadata:
                continue
            kind, value = f.metadata["kind"], getattr(self, f.name)
            if not kind.ok(value):
                problems.append(f"{f.metadata['key']}: {value!r} is not allowed; expected {kind.allowed}")
        if self.batch_timeout_s > self.max_queue_wait_s:
            problems.append(
                f"sidecar.batch.timeout ({format_duration(self.batch_timeout_s)}) must not exceed "
                f"sidecar.queue.max-wait ({format_duration(self.max_queue_wait_s)}): "
                "a batch could never fill before its requests expire"
            )
        if problems:
            raise ValueError("invalid configuration: " + "; ".join(problems))

    def options_for(self, backend: str) -> dict[str, str]:
        """The `sidecar.backend.<backend>.*` options, by option name."""
        return {option: value for name, option, value in self.backend_options if name == backend}

    @property
    def pack_bytes(self) -> int:
        """What a response message is packed up to: the pack size, within the message limit."""
        return min(self.response_pack_bytes, self.max_message_bytes)

    def admission_limits(self) -> AdmissionLimits:
        return AdmissionLimits(self.max_queue_length, self.max_queue_wait_s, self.max_per_stream or None)

    def batch_limits(self, backend_max_batch: int | None = None) -> BatchLimits:
        size = self.max_batch_size if backend_max_batch is None else min(self.max_batch_size, backend_max_batch)
        return BatchLimits(
            size,
            self.batch_timeout_s,
            self.instances,
            self.max_inflight_batches,
            self.backend_timeout_s,
            max_hung=self.max_hung,
            reload_attempts=self.reload_attempts,
            dispatch=Dispatch(self.batch_dispatch),
        )


@dataclass(frozen=True, slots=True)
class KeySpec:
    key: str
    field: str
    kind: Kind
    doc: str
    default: Any

    def show(self, value: Any) -> str:
        return self.kind.show(value)


KEYS: dict[str, KeySpec] = {
    f.metadata["key"]: KeySpec(f.metadata["key"], f.name, f.metadata["kind"], f.metadata["doc"], f.default)
    for f in fields(SidecarConfig)
    if "key" in f.metadata
}
