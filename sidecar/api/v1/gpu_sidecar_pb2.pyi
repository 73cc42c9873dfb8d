from google.protobuf import duration_pb2 as _duration_pb2
from google.rpc import status_pb2 as _status_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Tensor(_message.Message):
    __slots__ = ("name", "dtype", "shape", "data")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class InferRequest(_message.Message):
    __slots__ = ("request_id", "inputs", "timeout", "return_timing")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    RETURN_TIMING_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    inputs: _containers.RepeatedCompositeFieldContainer[Tensor]
    timeout: _duration_pb2.Duration
    return_timing: bool
    def __init__(self, request_id: _Optional[int] = ..., inputs: _Optional[_Iterable[_Union[Tensor, _Mapping]]] = ..., timeout: _Optional[_Union[_duration_pb2.Duration, _Mapping]] = ..., return_timing: bool = ...) -> None: ...

class InferBatch(_message.Message):
    __slots__ = ("request_ids", "inputs", "timeout", "return_timing")
    REQUEST_IDS_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    RETURN_TIMING_FIELD_NUMBER: _ClassVar[int]
    request_ids: _containers.RepeatedScalarFieldContainer[int]
    inputs: _containers.RepeatedCompositeFieldContainer[Tensor]
    timeout: _duration_pb2.Duration
    return_timing: bool
    def __init__(self, request_ids: _Optional[_Iterable[int]] = ..., inputs: _Optional[_Iterable[_Union[Tensor, _Mapping]]] = ..., timeout: _Optional[_Union[_duration_pb2.Duration, _Mapping]] = ..., return_timing: bool = ...) -> None: ...

class InferStreamRequest(_message.Message):
    __slots__ = ("requests", "cancel", "batches")
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[InferRequest]
    cancel: _containers.RepeatedScalarFieldContainer[int]
    batches: _containers.RepeatedCompositeFieldContainer[InferBatch]
    def __init__(self, requests: _Optional[_Iterable[_Union[InferRequest, _Mapping]]] = ..., cancel: _Optional[_Iterable[int]] = ..., batches: _Optional[_Iterable[_Union[InferBatch, _Mapping]]] = ...) -> None: ...

class InferResponse(_message.Message):
    __slots__ = ("request_id", "outputs", "error", "timing")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    outputs: _containers.RepeatedCompositeFieldContainer[Tensor]
    error: _status_pb2.Status
    timing: Timing
    def __init__(self, request_id: _Optional[int] = ..., outputs: _Optional[_Iterable[_Union[Tensor, _Mapping]]] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., timing: _Optional[_Union[Timing, _Mapping]] = ...) -> None: ...

class Timing(_message.Message):
    __slots__ = ("queue_wait", "compute", "batch_size")
    QUEUE_WAIT_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    queue_wait: _duration_pb2.Duration
    compute: _duration_pb2.Duration
    batch_size: int
    def __init__(self, queue_wait: _Optional[_Union[_duration_pb2.Duration, _Mapping]] = ..., compute: _Optional[_Union[_duration_pb2.Duration, _Mapping]] = ..., batch_size: _Optional[int] = ...) -> None: ...

class InferStreamResponse(_message.Message):
    __slots__ = ("responses", "unknown_cancels")
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_CANCELS_FIELD_NUMBER: _ClassVar[int]
    responses: _containers.RepeatedCompositeFieldContainer[InferResponse]
    unknown_cancels: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, responses: _Optional[_Iterable[_Union[InferResponse, _Mapping]]] = ..., unknown_cancels: _Optional[_Iterable[int]] = ...) -> None: ...

class PingRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PingResponse(_message.Message):
    __slots__ = ("version", "uptime")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    UPTIME_FIELD_NUMBER: _ClassVar[int]
    version: str
    uptime: _duration_pb2.Duration
    def __init__(self, version: _Optional[str] = ..., uptime: _Optional[_Union[_duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class GetModelInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TensorSpec(_message.Message):
    __slots__ = ("name", "dtype", "shape")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ...) -> None: ...

class Limits(_message.Message):
    __slots__ = ("max_batch_size", "batch_timeout", "max_queue_length", "max_queue_wait", "instances", "max_inflight_batches_per_instance", "max_message_bytes", "max_outstanding_per_stream", "max_queued_per_stream", "response_pack_bytes", "batch_major_requests")
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    BATCH_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_LENGTH_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_WAIT_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    MAX_INFLIGHT_BATCHES_PER_INSTANCE_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_OUTSTANDING_PER_STREAM_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUED_PER_STREAM_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_PACK_BYTES_FIELD_NUMBER: _ClassVar[int]
    BATCH_MAJOR_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    max_batch_size: int
    batch_timeout: _duration_pb2.Duration
    max_queue_length: int
    max_queue_wait: _duration_pb2.Duration
    instances: int
    max_inflight_batches_per_instance: int
    max_message_bytes: int
    max_outstanding_per_stream: int
    max_queued_per_stream: int
    response_pack_bytes: int
    batch_major_requests: bool
    def __init__(self, max_batch_size: _Optional[int] = ..., batch_timeout: _Optional[_Union[_duration_pb2.Duration, _Mapping]] = ..., max_queue_length: _Optional[int] = ..., max_queue_wait: _Optional[_Union[_duration_pb2.Duration, _Mapping]] = ..., instances: _Optional[int] = ..., max_inflight_batches_per_instance: _Optional[int] = ..., max_message_bytes: _Optional[int] = ..., max_outstanding_per_stream: _Optional[int] = ..., max_queued_per_stream: _Optional[int] = ..., response_pack_bytes: _Optional[int] = ..., batch_major_requests: bool = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("backend", "model_uri", "inputs", "outputs", "limits")
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    MODEL_URI_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    backend: str
    model_uri: str
    inputs: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    outputs: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    limits: Limits
    def __init__(self, backend: _Optional[str] = ..., model_uri: _Optional[str] = ..., inputs: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., outputs: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ...) -> None: ...

class GetMetricsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class MetricsSnapshot(_message.Message):
    __slots__ = ("metrics",)
    METRICS_FIELD_NUMBER: _ClassVar[int]
    metrics: _containers.RepeatedCompositeFieldContainer[MetricValue]
    def __init__(self, metrics: _Optional[_Iterable[_Union[MetricValue, _Mapping]]] = ...) -> None: ...

class MetricValue(_message.Message):
    __slots__ = ("identifier", "name", "scope", "variables", "counter", "gauge", "histogram", "meter")
    class VariablesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    IDENTIFIER_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    VARIABLES_FIELD_NUMBER: _ClassVar[int]
    COUNTER_FIELD_NUMBER: _ClassVar[int]
    GAUGE_FIELD_NUMBER: _ClassVar[int]
    HISTOGRAM_FIELD_NUMBER: _ClassVar[int]
    METER_FIELD_NUMBER: _ClassVar[int]
    identifier: str
    name: str
    scope: str
    variables: _containers.ScalarMap[str, str]
    counter: int
    gauge: float
    histogram: HistogramValue
    meter: MeterValue
    def __init__(self, identifier: _Optional[str] = ..., name: _Optional[str] = ..., scope: _Optional[str] = ..., variables: _Optional[_Mapping[str, str]] = ..., counter: _Optional[int] = ..., gauge: _Optional[float] = ..., histogram: _Optional[_Union[HistogramValue, _Mapping]] = ..., meter: _Optional[_Union[MeterValue, _Mapping]] = ...) -> None: ...

class HistogramValue(_message.Message):
    __slots__ = ("count", "sum", "min", "max", "mean", "stddev", "quantiles")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    SUM_FIELD_NUMBER: _ClassVar[int]
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    STDDEV_FIELD_NUMBER: _ClassVar[int]
    QUANTILES_FIELD_NUMBER: _ClassVar[int]
    count: int
    sum: float
    min: float
    max: float
    mean: float
    stddev: float
    quantiles: _containers.RepeatedCompositeFieldContainer[Quantile]
    def __init__(self, count: _Optional[int] = ..., sum: _Optional[float] = ..., min: _Optional[float] = ..., max: _Optional[float] = ..., mean: _Optional[float] = ..., stddev: _Optional[float] = ..., quantiles: _Optional[_Iterable[_Union[Quantile, _Mapping]]] = ...) -> None: ...

class Quantile(_message.Message):
    __slots__ = ("quantile", "value")
    QUANTILE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    quantile: float
    value: float
    def __init__(self, quantile: _Optional[float] = ..., value: _Optional[float] = ...) -> None: ...

class MeterValue(_message.Message):
    __slots__ = ("rate", "count")
    RATE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    rate: float
    count: int
    def __init__(self, rate: _Optional[float] = ..., count: _Optional[int] = ...) -> None: ...

class MemoryReportRequest(_message.Message):
    __slots__ = ("set_baseline", "top")
    SET_BASELINE_FIELD_NUMBER: _ClassVar[int]
    TOP_FIELD_NUMBER: _ClassVar[int]
    set_baseline: bool
    top: int
    def __init__(self, set_baseline: bool = ..., top: _Optional[int] = ...) -> None: ...

class GrowthSite(_message.Message):
    __slots__ = ("site", "size_diff_bytes", "count_diff", "size_bytes")
    SITE_FIELD_NUMBER: _ClassVar[int]
    SIZE_DIFF_BYTES_FIELD_NUMBER: _ClassVar[int]
    COUNT_DIFF_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    site: str
    size_diff_bytes: int
    count_diff: int
    size_bytes: int
    def __init__(self, site: _Optional[str] = ..., size_diff_bytes: _Optional[int] = ..., count_diff: _Optional[int] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class MemoryReport(_message.Message):
    __slots__ = ("tracing", "traced_bytes", "traced_peak_bytes", "rss_bytes", "threads", "open_fds", "has_baseline", "top_growth", "structures", "uptime")
    class StructuresEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    TRACING_FIELD_NUMBER: _ClassVar[int]
    TRACED_BYTES_FIELD_NUMBER: _ClassVar[int]
    TRACED_PEAK_BYTES_FIELD_NUMBER: _ClassVar[int]
    RSS_BYTES_FIELD_NUMBER: _ClassVar[int]
    THREADS_FIELD_NUMBER: _ClassVar[int]
    OPEN_FDS_FIELD_NUMBER: _ClassVar[int]
    HAS_BASELINE_FIELD_NUMBER: _ClassVar[int]
    TOP_GROWTH_FIELD_NUMBER: _ClassVar[int]
    STRUCTURES_FIELD_NUMBER: _ClassVar[int]
    UPTIME_FIELD_NUMBER: _ClassVar[int]
    tracing: bool
    traced_bytes: int
    traced_peak_bytes: int
    rss_bytes: int
    threads: int
    open_fds: int
    has_baseline: bool
    top_growth: _containers.RepeatedCompositeFieldContainer[GrowthSite]
    structures: _containers.ScalarMap[str, int]
    uptime: _duration_pb2.Duration
    def __init__(self, tracing: bool = ..., traced_bytes: _Optional[int] = ..., traced_peak_bytes: _Optional[int] = ..., rss_bytes: _Optional[int] = ..., threads: _Optional[int] = ..., open_fds: _Optional[int] = ..., has_baseline: bool = ..., top_growth: _Optional[_Iterable[_Union[GrowthSite, _Mapping]]] = ..., structures: _Optional[_Mapping[str, int]] = ..., uptime: _Optional[_Union[_duration_pb2.Duration, _Mapping]] = ...) -> None: ...
