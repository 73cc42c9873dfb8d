"""The KServe v2 HTTP front end of a real server, from a plain HTTP client: the
body Flink's Triton provider sends, the binary-tensor extension, errors, overload,
the bearer token, and counts that reconcile."""

from __future__ import annotations

import asyncio
import gzip
import json
import math

import numpy as np

from sidecar.backends.mock import MockBackend
from tests.kserve.helpers import FLINK_CONTENT_TYPE, flink_body, http, post_json
from tests.rpc.helpers import Gate, eventually, queue_depth_reaches, run, serving, settled_counts

VALUES = [float(i) / 4 for i in range(16)]
LATEST = "/v2/models/model/versions/latest/infer"


def _flink_post(port: int, values: list[float], *, compress: bool, path: str = LATEST, headers=None):
    raw = json.dumps(flink_body(values)).encode()
    h = {"Content-Type": FLINK_CONTENT_TYPE, **(headers or {})}
    if compress:
        raw, h["Content-Encoding"] = gzip.compress(raw), "gzip"
    return http(port, "POST", path, raw, h)


def test_the_body_flinks_triton_provider_sends_is_answered_with_json_data_gzip_or_not():
    async def go() -> None:
        async with serving(max_batch_size=8) as server:
            for compress in (False, True):
                answer = await _flink_post(server.kserve_http_port, VALUES, compress=compress)
                assert answer.status == 200, answer.body
                assert answer.headers["content-type"].startswith("application/json")
                doc = answer.json()
                assert [o["name"] for o in doc["outputs"]] == ["output"]  # one output: Flink reads every one
                (out,) = doc["outputs"]
                assert out["datatype"] == "FP32" and out["shape"] == [1, 16]
                np.testing.assert_allclose(out["data"], np.array(VALUES, np.float32) * 2)
                assert (doc["model_name"], doc["model_version"]) == ("model", "1")
            live = await http(server.kserve_http_port, "GET", "/v2/health/live")
            assert live.status == 200

    run(go())


def test_a_request_of_n_items_is_answered_as_one_with_n_rows_and_each_version_spelling_works():
    async def go() -> None:
        async with serving(max_batch_size=4) as server:
            x = np.arange(5 * 16, dtype=np.float32).reshape(5, 16)
            doc = {"id": "r-7", "inputs": [{"name": "input", "datatype": "FP32", "shape": [5, 16], "data": x.tolist()}]}
            for path in ("/v2/models/model/infer", "/v2/models/model/versions/1/infer", LATEST):
                answer = await post_json(server.kserve_http_port, path, doc)
                assert answer.status == 200, answer.body
                out = answer.json()
                assert out["id"] == "r-7"
                (o,) = out["outputs"]
                assert o["shape"] == [5, 16]
                np.testing.assert_array_equal(np.array(o["data"], np.float32).reshape(5, 16), x * 2)
            wrong = await post_json(server.kserve_http_port, "/v2/models/model/versions/2/infer", doc)
            assert wrong.status == 404 and "serves version '1'" in wrong.json()["error"]
            unknown = await post_json(server.kserve_http_port, "/v2/models/resnet/infer", doc)
            assert unknown.status == 404 and "serves 'model'" in unknown.json()["error"]

    run(go())


def test_binary_tensors_in_and_out_follow_the_extension():
    async def go() -> None:
        async with serving() as server:
            x = np.linspace(-1, 1, 3 * 16, dtype=np.float32).reshape(3, 16)
            head = json.dumps({
                "inputs": [{"name": "input", "datatype": "FP32", "shape": [3, 16],
                            "parameters": {"binary_data_size": x.nbytes}}],
                "outputs": [{"name": "output", "parameters": {"binary_data": True}}],
            }).encode()
            answer = await http(server.kserve_http_port, "POST", "/v2/models/model/infer", head + x.tobytes(),
                                {"Inference-Header-Content-Length": str(len(head))})
            assert answer.status == 200, answer.body
            n = int(answer.headers["inference-header-content-length"])
            meta = json.loads(answer.body[:n])
            (o,) = meta["outputs"]
            assert o["parameters"]["binary_data_size"] == x.nbytes and "data" not in o
            np.testing.assert_array_equal(np.frombuffer(answer.body[n:], np.float32).reshape(3, 16), x * 2)
            short = await http(server.kserve_http_port, "POST", "/v2/models/model/infer", head + x.tobytes()[:-4],
                                {"Inference-Header-Content-Length": str(len(head))})
            assert short.status == 400 and "binary_data_size" in short.json()["error"]

    run(go())


BAD = {
    "not JSON": (b"{nope", "not JSON"),
    "no inputs": (b"{}", "no 'inputs'"),
    "wrong shape": (json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 15],
                                            "data": [0.0] * 15}]}).encode(), "is not [N, 16]"),
    "wrong datatype": (json.dumps({"inputs": [{"name": "input", "datatype": "INT32", "shape": [1, 16],
                                               "data": [0] * 16}]}).encode(), "INT32 does not match the model's FP32"),
    "strings": (json.dumps({"inputs": [{"name": "input", "datatype": "BYTES", "shape": [1],
                                        "data": ["text"]}]}).encode(), "BYTES is not taken by this model"),
    "nulls in data": (json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 2],
                                              "data": [1.0, None]}]}).encode(), "must be numbers"),
    "unknown input": (json.dumps({"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1, 16],
                                              "data": [0.0] * 16}]}).encode(), "unknown input name(s) ['pixels']"),
    "deep nesting": (b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "not JSON"),
    "huge shape": (json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [2**40, 2**40],
                                           "data": [0.0]}]}).encode(), "too large"),
}


def test_each_bad_body_gets_400_saying_what_is_wrong_and_its_neighbours_are_served():
    async def go() -> None:
        async with serving() as server:
            port = server.kserve_http_port
            good = [_flink_post(port, [float(i)] * 16, compress=False) for i in range(len(BAD))]
            bad = [http(port, "POST", LATEST, body, {"Content-Type": "application/json"}) for body, _ in BAD.values()]
            answers = await asyncio.gather(*good, *bad)
            for i, answer in enumerate(answers[: len(BAD)]):
                assert answer.status == 200, answer.body
                np.testing.assert_allclose(answer.json()["outputs"][0]["data"], [2.0 * i] * 16)
            for (what, (_, words)), answer in zip(BAD.items(), answers[len(BAD):]):
                assert answer.status == 400, (what, answer.status, answer.body[:300])
                message = answer.json()["error"]
                assert words in message and len(message) < 1000, (what, message)
            counts = await settled_counts(server)
            assert counts["outcomes"] == {"received": 2 * len(BAD), "succeeded": len(BAD), "invalid": len(BAD)}
            assert counts["kserve"]["http"] == {"requests": 2 * len(BAD), "failed": len(BAD)}

    run(go())


def test_a_full_queue_answers_503_with_retry_after_and_the_queued_requests_still_succeed():
    gate = Gate(opened=False)

    async def go() -> None:
        backend = MockBackend("mock:?base_ms=1&per_item_ms=0", sleep=gate)
        async with serving(backends=[backend], max_queue_length=1, max_batch_size=1,
                           max_inflight_batches=1) as server:
            port = server.kserve_http_port
            running = asyncio.ensure_future(_flink_post(port, VALUES, compress=False))
            await eventually(lambda: server._ingress.outstanding == 1, "the first request to reach the backend")
            queued = asyncio.ensure_future(_flink_post(port, VALUES, compress=True))
            await queue_depth_reaches(server, 1)
            refused = await _flink_post(port, VALUES, compress=False)
            assert refused.status == 503, refused.body
            assert "queue is full" in refused.json()["error"]
            assert int(refused.headers["retry-after"]) >= 1
            gate.open.set()
            for answer in await asyncio.gather(running, queued):
                assert answer.status == 200, answer.body
            counts = await settled_counts(server)
            assert counts["outcomes"] == {"received": 3, "succeeded": 2, "rejected": 1}

    run(go())


def test_past_max_inflight_a_request_is_answered_503_before_its_body_is_read():
    gate = Gate(opened=False)

    async def go() -> None:
        backend = MockBackend("mock:?base_ms=1&per_item_ms=0", sleep=gate)
        async with serving(backends=[backend], kserve_http_max_inflight=2) as server:
            port = server.kserve_http_port
            held = [asyncio.ensure_future(_flink_post(port, VALUES, compress=False)) for _ in range(2)]
            await eventually(lambda: server._kserve_http.inflight == 2, "two requests in flight")
            refused = await _flink_post(port, VALUES, compress=False)
            assert refused.status == 503 and "sidecar.kserve.http.max-inflight" in refused.json()["error"]
            assert "retry-after" in refused.headers
            gate.open.set()
            assert [a.status for a in await asyncio.gather(*held)] == [200, 200]
            counts = await settled_counts(server)
            assert counts["outcomes"] == {"received": 3, "succeeded": 2, "rejected": 1}

    run(go())


def test_with_a_bearer_token_only_health_is_open_and_the_token_admits():
    async def go() -> None:
        async with serving(kserve_http_token="s3cret") as server:
            port = server.kserve_http_port
            assert (await http(port, "GET", "/v2/health/ready")).status == 200
            missing = await _flink_post(port, VALUES, compress=False)
            assert missing.status == 401 and missing.headers["www-authenticate"] == "Bearer"
            wrong = await _flink_post(port, VALUES, compress=False, headers={"Authorization": "Bearer nope"})
            assert wrong.status == 401 and "does not match" in wrong.json()["error"]
            assert (await http(port, "GET", "/v2/models/model", headers={"Authorization": "Bearer nope"})).status == 401
            ok = await _flink_post(port, VALUES, compress=True, headers={"Authorization": "Bearer s3cret"})
            assert ok.status == 200, ok.body

    run(go())


def test_a_body_above_the_message_limit_is_413_and_unknown_paths_404():
    async def go() -> None:
        async with serving(max_message_bytes=64 * 1024) as server:
            port = server.kserve_http_port
            big = await _flink_post(port, [0.0] * 20_000, compress=False)
            assert big.status == 413 and "error" in big.json()
            assert (await http(port, "GET", "/v2/models/model/nonsense")).status == 404
            assert (await http(port, "DELETE", "/v2/health/live")).status == 405
            # a gzip bomb decompresses past the limit: refused the same way
            bomb = gzip.compress(b" " * (8 * 1024 * 1024))
            answer = await http(port, "POST", LATEST, bomb, {"Content-Encoding": "gzip", "Content-Type": "application/json"})
            assert answer.status == 413

    run(go())


def test_metadata_config_readiness_and_statistics():
    async def go() -> None:
        async with serving(max_batch_size=8, batch_timeout_s=0.004, model_name="scorer", model_version=3) as server:
            port = server.kserve_http_port
            meta = (await http(port, "GET", "/v2/models/scorer")).json()
            assert meta["versions"] == ["3"] and meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 16]}]
            config = (await http(port, "GET", "/v2/models/scorer/versions/3/config")).json()
            assert config["max_batch_size"] == 8 and config["input"][0]["dims"] == [16]
            assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 4000
            assert (await http(port, "GET", "/v2/models/scorer/ready")).status == 200
            assert "statistics" in (await http(port, "GET", "/v2")).json()["extensions"]
            for _ in range(3):
                assert (await _flink_post(port, VALUES, compress=False, path="/v2/models/scorer/infer")).status == 200
            await settled_counts(server, lambda c: c["outcomes"].get("succeeded") == 3)
            (stats,) = (await http(port, "GET", "/v2/models/scorer/stats")).json()["model_stats"]
            assert stats["inference_count"] == 3 and stats["inference_stats"]["queue"]["count"] == 3
            assert stats["inference_stats"]["compute_infer"]["ns"] > 0 and stats["last_inference"] > 0

    run(go())


def test_while_draining_new_requests_get_503_and_readiness_turns_503():
    gate = Gate(opened=False)

    async def go() -> None:
        backend = MockBackend("mock:?base_ms=1&per_item_ms=0", sleep=gate)
        async with serving(backends=[backend], drain_timeout_s=5.0) as server:
            port = server.kserve_http_port
            held = asyncio.ensure_future(_flink_post(port, VALUES, compress=False))
            await eventually(lambda: server._ingress.outstanding == 1, "a request in flight")
            drained = asyncio.ensure_future(server.drain())
            await eventually(lambda: server._ingress.draining, "the drain to begin")
            refused = await _flink_post(port, VALUES, compress=False)
            assert refused.status == 503 and "draining" in refused.json()["error"]
            assert (await http(port, "GET", "/v2/health/ready")).status == 503
            gate.open.set()
            assert (await held).status == 200  # what was in flight finishes
            report = await drained
            assert report.completed and not math.isnan(report.seconds)

    run(go())
