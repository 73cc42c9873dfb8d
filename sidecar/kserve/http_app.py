"""KServe v2 over HTTP/REST, on aiohttp and the server's own event loop (docs/kserve.md).

    GET  /v2/health/live | /v2/health/ready          200, or 503 while not ready
    GET  /v2                                         server metadata
    GET  /v2/models/{m}[/versions/{v}]               model metadata
    GET  /v2/models/{m}[/versions/{v}]/ready         200 or 503
    GET  /v2/models/{m}[/versions/{v}]/config        Triton's model configuration
    GET  /v2/models[/{m}[/versions/{v}]]/stats       Triton's model statistics
    POST /v2/models/{m}[/versions/{v}]/infer         JSON, or JSON + binary tensors

The version may be `latest` or the configured one. Request bodies may be gzip or
deflate (aiohttp decompresses them, bounded by sidecar.rpc.max-message-size).
With sidecar.kserve.http.bearer-token set, everything but /v2/health/* needs
`Authorization: Bearer <token>`. Errors are `{"error": "..."}`: 400 bad input,
401 no token, 404 unknown model or path, 413 body too large, 503 overloaded,
loading or draining (with Retry-After), 504 deadline, 500 the backend failed.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from sidecar.core.kserve_tensors import KTensor
from sidecar.core.status import Code, Failure
from sidecar.core.tensors import InvalidTensors
from sidecar.kserve import views
from sidecar.kserve.calls import LOADING, MAX_TIMEOUT_S, count_refused, infer_once
from sidecar.kserve.types import KRequest, KResult, Model
from sidecar.kserve.values import raw_from_values, values_from_raw
from sidecar.core.quote import clip, quote
from sidecar.rpc.convert import MAX_MESSAGE_CHARS
from sidecar.server.ingress import Ingress

log = logging.getLogger(__name__)

HEADER_LENGTH = "Inference-Header-Content-Length"
_DECIMAL = re.compile(r"[0-9]{1,12}")
# JSON past this size is parsed on a worker thread. json.loads holds the GIL while
# it runs, but converting the values after it does not, so the loop keeps moving.
PARSE_INLINE_BYTES = 64 * 1024
STATUS_OF = {
    Code.INVALID_ARGUMENT: 400,
    Code.UNAUTHENTICATED: 401,
    Code.NOT_FOUND: 404,
    Code.RESOURCE_EXHAUSTED: 503,
    Code.UNAVAILABLE: 503,
    Code.DEADLINE_EXCEEDED: 504,
    Code.CANCELLED: 500,
    Code.INTERNAL: 500,
}
JSON = "application/json"
BINARY = "application/octet-stream"


class KServeHttp:
    """The HTTP front end: `app` to serve. `model` is set once the backend has loaded."""

    def __init__(
        self,
        ingress: Ingress,
        ready: Callable[[], bool],
        statistics: Callable[[Model], Awaitable[dict[str, Any]]],
        *,
        max_body_bytes: int,
        max_json_bytes: int,
        max_inflight: int,
        bearer_token: str = "",
    ) -> None:
        self._ingress = ingress
        self._ready = ready
        self._statistics = statistics
        self._token = f"Bearer {bearer_token}".encode() if bearer_token else None
        self._max_inflight = max_inflight
        self._max_json = max_json_bytes
        self.inflight = 0
        self.model: Model | None = None
        app = web.Application(client_max_size=max_body_bytes, middlewares=[self._errors, self._auth])
        r = app.router
        r.add_get("/v2/health/live", self._live)
        r.add_get("/v2/health/ready", self._server_ready)
        r.add_get("/v2", self._server_metadata)
        r.add_get("/v2/models/stats", self._stats)
        for base in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
            r.add_get(base, self._model_metadata)
            r.add_get(base + "/ready", self._model_ready)
            r.add_get(base + "/config", self._config)
            r.add_get(base + "/stats", self._stats)
            r.add_post(base + "/infer", self._infer)
        self.app = app

    # ---- middleware ---------------------------------------------------------------------

    @web.middleware
    async def _errors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """aiohttp's own errors (404, 405, 413) as KServe's JSON errors."""
        try:
            return await handler(request)
        except _Failed as e:
            return _failure_response(e.failure)
        except web.HTTPException as e:
            if e.status < 400:
                raise
            message = e.text if e.text and not e.text.startswith(str(e.status)) else e.reason
            return _error_response(e.status, f"{request.method} {quote(request.path)}: {message}", e.headers)
        except RequestPayloadError as e:  # the body broke on the way in (a corrupt gzip stream, say)
            return _error_response(400, f"the request body could not be read: {quote(str(e).strip())}")
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug: the client still gets a JSON error, the log the traceback
            log.exception("kserve http: %s %s failed", request.method, request.path[:200])
            return _error_response(500, "the sidecar failed to handle this request; it is logged")

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self._token is None or request.path.startswith("/v2/health/"):
            return await handler(request)
        given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(given, self._token):
            why = "no Authorization header" if not given else "the bearer token does not match"
            return _error_response(401, f"this sidecar needs 'Authorization: Bearer <token>': {why}",
                                   {"WWW-Authenticate": "Bearer"})
        return await handler(request)

    # ---- health and metadata ------------------------------------------------------------

    async def _live(self, request: web.Request) -> web.Response:
        return web.json_response({"live": True})

    async def _server_ready(self, request: web.Request) -> web.Response:
        ready = self._ready()
        return web.json_response({"ready": ready}, status=200 if ready else 503)

    async def _server_metadata(self, request: web.Request) -> web.Response:
        return web.json_response(views.server_metadata())

    async def _model_metadata(self, request: web.Request) -> web.Response:
        return web.json_response(views.model_metadata(self._model(request)))

    async def _model_ready(self, request: web.Request) -> web.Response:
        self._model(request)
        ready = self._ready()
        return web.json_response({"name": self.model.name if self.model else "", "ready": ready},
                                 status=200 if ready else 503)

    async def _config(self, request: web.Request) -> web.Response:
        return web.json_response(views.model_config(self._model(request)))

    async def _stats(self, request: web.Request) -> web.Response:
        model = self._model(request) if "model" in request.match_info else self._loaded()
        return web.json_response({"model_stats": [await self._statistics(model)]})

    def _loaded(self) -> Model:
        if self.model is None:
            raise _Failed(LOADING)
        return self.model

    def _model(self, request: web.Request) -> Model:
        model = self._loaded()
        failure = model.resolve(request.match_info["model"], request.match_info.get("version", ""))
        if failure is not None:
            raise _Failed(failure)
        return model

    # ---- inference ----------------------------------------------------------------------

    async def _infer(self, request: web.Request) -> web.StreamResponse:
        if self.inflight >= self._max_inflight:
            count_refused(self._ingress, "http", "rejected")
            return _failure_response(Failure(
                Code.RESOURCE_EXHAUSTED,
                f"{self.inflight} HTTP infer requests are in flight, the limit (sidecar.kserve.http.max-inflight); "
                "retry shortly",
                retry_after_s=0.001,
            ))
        self.inflight += 1
        try:
            return await self._infer_one(request)
        finally:
            self.inflight -= 1

    async def _infer_one(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        args = (body, request.headers.get(HEADER_LENGTH), request.match_info["model"],
                request.match_info.get("version", ""), self._max_json)
        try:
            if len(body) > PARSE_INLINE_BYTES:
                k, binary = await asyncio.to_thread(to_request, *args)
            else:
                k, binary = to_request(*args)
        except InvalidTensors as e:
            count_refused(self._ingress, "http", "invalid")
            return _error_response(400, clip(str(e), MAX_MESSAGE_CHARS))
        result = await infer_once(self._ingress, self.model, k, "http")
        if result.failure is not None:
            return _failure_response(result.failure)
        response = to_response(result, self.model, binary)
        if _accepts_compression(request.headers.get("Accept-Encoding", "")):
            response.enable_compression()
        return response


class _Failed(Exception):
    def __init__(self, failure: Failure) -> None:
        self.failure = failure


# ---- the wire format ----------------------------------------------------------------------


class Binary:
    """Which outputs go back as binary data: by name (as the client spelled it, or
    that lower-cased, as names are matched), else the request's default."""

    def __init__(self, default: bool, by_name: dict[str, bool]) -> None:
        self.default = default
        self.by_name = {**{k.lower(): v for k, v in by_name.items()}, **by_name}

    def __call__(self, name: str) -> bool:
        return self.by_name.get(name, self.by_name.get(name.lower(), self.default))


def _accepts_compression(accept: str) -> bool:
    """gzip or deflate offered, and not with q=0."""
    for part in accept.lower().split(","):
        coding, _, params = part.partition(";")
        if coding.strip() in ("gzip", "deflate") and params.replace(" ", "") not in ("q=0", "q=0.0", "q=0.00", "q=0.000"):
            return True
    return False


def to_request(
    body: bytes, header_length: str | None, model: str, version: str, max_json_bytes: int
) -> tuple[KRequest, Binary]:
    """An infer body (JSON, then binary tensors if `header_length` is given) as the
    front ends' common form; InvalidTensors says what is wrong with it."""
    json_part, binary = body, b""
    if header_length is not None:
        if not _DECIMAL.fullmatch(header_length.strip()) or int(header_length) > len(body):
            raise InvalidTensors(f"{HEADER_LENGTH} is {quote(header_length)}, but the body has {len(body)} bytes")
        n = int(header_length)
        json_part, binary = body[:n], body[n:]
    if len(json_part) > max_json_bytes:
        raise InvalidTensors(
            f"the request's JSON is {len(json_part):,} bytes, more than {max_json_bytes:,} "
            "(sidecar.kserve.http.max-json-size); send large tensors as binary data (binary_data_size)"
        )
    try:
        doc = json.loads(json_part)
    except (ValueError, RecursionError) as e:
        raise InvalidTensors(f"the request body is not JSON: {quote(str(e))}") from None
    if not isinstance(doc, dict):
        raise InvalidTensors("the request body must be a JSON object with 'inputs'")
    request_id = _field(doc, "id", str, "")
    parameters = _field(doc, "parameters", dict, {})
    inputs = _field(doc, "inputs", list, None)
    if inputs is None:
        raise InvalidTensors("the request has no 'inputs'")
    tensors, offset = [], 0
    for i, entry in enumerate(inputs):
        tensor, offset = _input(entry, i, binary, offset)
        tensors.append(tensor)
    if offset != len(binary):
        raise InvalidTensors(f"the body has {len(binary) - offset} bytes after the tensors' binary data")
    outputs, binary_by_name = [], {}
    for i, entry in enumerate(_field(doc, "outputs", list, [])):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise InvalidTensors(f"outputs[{i}] must be an object with a string 'name'")
        outputs.append(entry["name"])
        wants = _field(entry, "parameters", dict, {}).get("binary_data")
        if wants is not None:
            binary_by_name[entry["name"]] = _flag(wants, f"outputs[{i}].parameters.binary_data")
    timeout = parameters.get("timeout")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 <= timeout <= MAX_TIMEOUT_S * 1e6
    ):
        raise InvalidTensors(
            f"parameter 'timeout' must be a number of microseconds from 0 to {MAX_TIMEOUT_S * 1e6:.0f}, "
            f"not {quote(str(timeout))}"
        )
    # 0, as in Triton, is no timeout of its own.
    k = KRequest(model, version, request_id, tensors, outputs, timeout / 1e6 if timeout else None)
    default = _flag(parameters.get("binary_data_output", False), "parameters.binary_data_output")
    return k, Binary(default, binary_by_name)


def _flag(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidTensors(f"{where} must be true or false, not {quote(json.dumps(value))}")
    return value


def _input(entry: Any, i: int, binary: bytes, offset: int) -> tuple[KTensor, int]:
    if not isinstance(entry, dict):
        raise InvalidTensors(f"inputs[{i}] must be an object")
    name = _field(entry, "name", str, None)
    datatype = _field(entry, "datatype", str, None)
    shape = _field(entry, "shape", list, None)
    if name is None or datatype is None or shape is None:
        raise InvalidTensors(f"inputs[{i}] needs 'name', 'datatype' and 'shape'")
    if not all(isinstance(d, int) and not isinstance(d, bool) for d in shape[:64]) or len(shape) > 64:
        raise InvalidTensors(f"input {quote(name)}: 'shape' must be a short list of integers")
    size = _field(entry, "parameters", dict, {}).get("binary_data_size")
    if size is not None:
        if "data" in entry:
            raise InvalidTensors(f"input {quote(name)}: has both 'data' and binary_data_size")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0 or offset + size > len(binary):
            raise InvalidTensors(
                f"input {quote(name)}: binary_data_size {quote(str(size)[:40])} does not fit the "
                f"{len(binary) - offset} binary bytes left in the body"
            )
        return KTensor(name, datatype, tuple(shape), binary[offset : offset + size]), offset + size
    if "data" not in entry:
        raise InvalidTensors(f"input {quote(name)}: no 'data' and no binary_data_size")
    if not isinstance(entry["data"], list):
        raise InvalidTensors(f"input {quote(name)}: 'data' must be a JSON array")
    return KTensor(name, datatype, tuple(shape), raw_from_values(name, datatype, shape, entry["data"])), offset


def _field(doc: dict[str, Any], key: str, kind: type, default: Any) -> Any:
    value = doc.get(key, default)
    if value is not default and not isinstance(value, kind):
        raise InvalidTensors(f"'{key}' must be a JSON {_JSON_NAMES[kind]}")
    return value


_JSON_NAMES = {str: "string", dict: "object", list: "array"}


def to_response(result: KResult, model: Model | None, binary: Binary) -> web.Response:
    head: dict[str, Any] = {}
    if model is not None:
        head["model_name"], head["model_version"] = model.name, model.version
    if result.id:
        head["id"] = result.id
    outputs, tail = [], []
    for t in result.outputs:
        out: dict[str, Any] = {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
        if binary(t.name):
            out["parameters"] = {"binary_data_size": len(t.data)}
            tail.append(t.data)
        else:
            out["data"] = values_from_raw(t.datatype, t.data)
        outputs.append(out)
    head["outputs"] = outputs
    try:
        text = json.dumps(head, separators=(",", ":"), allow_nan=False).encode()
    except ValueError:  # NaN or infinity: JSON has no spelling for them
        return _error_response(500, "an output holds NaN or infinity, which JSON cannot carry; ask for it as "
                                    "binary data (\"parameters\": {\"binary_data\": true})")
    if not tail:
        return web.Response(body=text, content_type=JSON)
    return web.Response(body=b"".join([text, *tail]), content_type=BINARY, headers={HEADER_LENGTH: str(len(text))})


def _failure_response(failure: Failure) -> web.Response:
    headers = {}
    if failure.retry_after_s is not None:
        # Retry-After takes whole seconds; the message keeps the exact hint.
        headers["Retry-After"] = str(max(1, math.ceil(failure.retry_after_s)))
    return _error_response(STATUS_OF.get(failure.code, 500), clip(failure.message, MAX_MESSAGE_CHARS), headers)


def _error_response(status: int, message: str, headers: Any = None) -> web.Response:
    keep = {k: v for k, v in (headers or {}).items() if k in ("Retry-After", "WWW-Authenticate", "Allow")}
    return web.json_response({"error": message}, status=status, headers=keep)
