"""The KServe HTTP front end at the edges a deployment reaches: hostile header and
JSON fields, a client that leaves mid-request, requests that could never fit."""

from __future__ import annotations

import asyncio
import gzip
import json
import threading

import numpy as np
import pytest

from sidecar.backends.mock import MockBackend
from tests.http_client import exchange, parse
from tests.kserve.helpers import flink_body, http, post_json
from tests.rpc.helpers import WAIT_S, Gate, eventually, queue_depth_reaches, run, serving, settled_counts

INFER = "/v2/models/model/infer"
ONE = {"name": "input", "datatype": "FP32", "shape": [1, 16]}


def _body(**fields) -> bytes:
    return json.dumps({"inputs": [{**ONE, "data": [0.0] * 16}], **fields}).encode()


HOSTILE = {
    "header length not ASCII digits": (_body(), {"Inference-Header-Content-Length": "²"}, "Inference-Header-Content-Length"),
    "header length of 5,000 digits": (_body(), {"Inference-Header-Content-Length": "9" * 5000}, "Inference-Header-Content-Length"),
    "header length past the body": (_body(), {"Inference-Header-Content-Length": "999999"}, "but the body has"),
    "data a number": (json.dumps({"inputs": [{**ONE, "data": 5}]}).encode(), {}, "'data' must be a JSON array"),
    "data null": (json.dumps({"inputs": [{**ONE, "data": None}]}).encode(), {}, "'data' must be a JSON array"),
    "data an object": (json.dumps({"inputs": [{**ONE, "data": {"a": 1}}]}).encode(), {}, "'data' must be a JSON array"),
    "timeout 1e300": (_body(parameters={"timeout": 1e300}), {}, "parameter 'timeout' must be"),
    "timeout 10**30": (_body(parameters={"timeout": 10**30}), {}, "parameter 'timeout' must be"),
    "timeout Infinity": (_body().replace(b'"inputs"', b'"parameters": {"timeout": Infinity}, "inputs"'), {}, "parameter 'timeout' must be"),
    "timeout negative": (_body(parameters={"timeout": -5}), {}, "parameter 'timeout' must be"),
    "timeout text": (_body(parameters={"timeout": "soon"}), {}, "parameter 'timeout' must be"),
    "binary_data_output text": (_body(parameters={"binary_data_output": "false"}), {}, "must be true or false"),
    "binary_data text": (_body(outputs=[{"name": "output", "parameters": {"binary_data": "no"}}]), {}, "must be true or false"),
    "corrupt gzip": (b"\x1f\x8b\x08garbage", {"Content-Encoding": "gzip"}, "could not be read"),
    "a huge id": (_body(id="x" * 1_000_000), {}, None),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_fields_get_a_json_400_saying_what_is_wrong_never_a_bare_500(case):
    body, headers, words = HOSTILE[case]

    async def go() -> None:
        async with serving() as server:
            answer = await http(server.kserve_http_port, "POST", INFER, body, {"Content-Type": "application/json", **headers})
            if words is None:  # legal, if odd: served, and the id comes back whole
                assert answer.status == 200 and answer.json()["id"] == "x" * 1_000_000
                return
            assert answer.status == 400, (answer.status, answer.body[:300])
            message = answer.json()["error"]
            assert words in message and len(message) < 1000, message
            ok = await post_json(server.kserve_http_port, INFER, flink_body([1.0] * 16))
            assert ok.status == 200

    run(go())


def test_a_token_header_that_is_not_text_is_refused_401():
    async def go() -> None:
        async with serving(kserve_http_token="s3cret") as server:
            raw = (b"GET /v2/models/model HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\n"
                   b"Connection: close\r\n\r\n")
            answer = parse(await exchange(server.kserve_http_port, raw))
            assert answer.status == 401 and b"does not match" in answer.body

    run(go())


def test_json_above_max_json_size_is_refused_pointing_at_binary_data():
    async def go() -> None:
        async with serving(kserve_http_max_json=4096) as server:
            x = np.zeros((100, 16), np.float32)
            doc = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [100, 16], "data": x.tolist()}]}
            answer = await post_json(server.kserve_http_port, INFER, doc)
            assert answer.status == 400 and "sidecar.kserve.http.max-json-size" in answer.json()["error"]
            head = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [100, 16],
                                           "parameters": {"binary_data_size": x.nbytes}}]}).encode()
            binary = await http(server.kserve_http_port, "POST", INFER, head + x.tobytes(),
                                {"Inference-Header-Content-Length": str(len(head))})
            assert binary.status == 200, binary.body[:300]  # the same tensor as binary data fits

    run(go())


def test_a_request_larger_than_the_queue_is_refused_400_not_a_503_to_retry_for_ever():
    async def go() -> None:
        async with serving(max_queue_length=4) as server:
            x = np.zeros((8, 16), np.float32)
            answer = await post_json(server.kserve_http_port, INFER, {"inputs": [{
                "name": "input", "datatype": "FP32", "shape": [8, 16], "data": x.tolist()}]})
            assert answer.status == 400 and "more than the 4 one request may carry" in answer.json()["error"]

    run(go())


def test_outputs_named_in_another_case_keep_their_binary_choice_and_timeout_0_is_none():
    async def go() -> None:
        async with serving() as server:
            doc = {"parameters": {"timeout": 0}, "inputs": [{**ONE, "data": [1.0] * 16}],
                   "outputs": [{"name": "OUTPUT", "parameters": {"binary_data": True}}]}
            answer = await post_json(server.kserve_http_port, INFER, doc)
            assert answer.status == 200, answer.body
            n = int(answer.headers["inference-header-content-length"])
            assert json.loads(answer.body[:n])["outputs"][0]["parameters"]["binary_data_size"] == 64
            np.testing.assert_array_equal(np.frombuffer(answer.body[n:], np.float32), [2.0] * 16)

    run(go())


def test_nan_outputs_asked_for_as_json_are_a_clear_error_and_as_binary_are_served():
    async def go() -> None:
        async with serving() as server:
            x = np.full((1, 16), np.nan, np.float32)
            head = json.dumps({"inputs": [{**ONE, "parameters": {"binary_data_size": 64}}]}).encode()
            answer = await http(server.kserve_http_port, "POST", INFER, head + x.tobytes(),
                                {"Inference-Header-Content-Length": str(len(head))})
            assert answer.status == 500 and "NaN or infinity" in answer.json()["error"]
            head = json.dumps({"parameters": {"binary_data_output": True},
                               "inputs": [{**ONE, "parameters": {"binary_data_size": 64}}]}).encode()
            answer = await http(server.kserve_http_port, "POST", INFER, head + x.tobytes(),
                                {"Inference-Header-Content-Length": str(len(head))})
            assert answer.status == 200

    run(go())


class SecondBatchWaits:
    """A mock's sleep: the first batch runs at once, later ones wait for `go`."""

    def __init__(self) -> None:
        self.calls = 0
        self.go = threading.Event()

    def __call__(self, seconds: float) -> None:
        self.calls += 1
        if self.calls > 1:
            assert self.go.wait(WAIT_S), "never let go"


def test_a_client_that_leaves_mid_request_gets_nothing_counted_as_delivered():
    sleep = SecondBatchWaits()

    async def go() -> None:
        backend = MockBackend("mock:?base_ms=1&per_item_ms=0", sleep=sleep)
        async with serving(backends=[backend], max_batch_size=4, max_inflight_batches=1) as server:
            x = np.zeros((8, 16), np.float32)
            doc = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [8, 16], "data": x.tolist()}]}
            client = asyncio.ensure_future(post_json(server.kserve_http_port, INFER, doc))
            await eventually(lambda: sleep.calls == 2, "the first batch done, the second in the backend")
            client.cancel()
            await eventually(lambda: server._ingress.open_streams == 0, "the request's stream to close")
            sleep.go.set()
            counts = await settled_counts(server, lambda c: c["outcomes"].get("cancelled") == 8)
            # The 4 answered before it left were held for the rest: nobody got them.
            assert counts["outcomes"] == {"received": 8, "cancelled": 8}
            assert counts["totals"]["written"] == 0

    run(go())


def test_while_loading_and_draining_a_503_carries_retry_after():
    async def go() -> None:
        async with serving() as server:
            server._ingress.start_draining()
            answer = await post_json(server.kserve_http_port, INFER, flink_body([1.0] * 16))
            assert answer.status == 503 and answer.headers["retry-after"] == "1"

    run(go())


def test_gzip_bodies_compress_answers_only_when_asked():
    async def go() -> None:
        async with serving() as server:
            raw = gzip.compress(json.dumps(flink_body([1.0] * 16)).encode())
            for accept, compressed in (("gzip", True), ("gzip;q=0", False), ("identity", False)):
                answer = await http(server.kserve_http_port, "POST", INFER, raw,
                                    {"Content-Encoding": "gzip", "Accept-Encoding": accept})
                assert answer.status == 200
                assert (answer.headers.get("content-encoding") == "gzip") is compressed, accept

    run(go())


def test_a_request_partly_refused_is_one_503_and_its_admitted_items_are_withdrawn():
    gate = Gate(opened=False)

    async def go() -> None:
        backend = MockBackend("mock:?base_ms=1&per_item_ms=0", sleep=gate)
        async with serving(backends=[backend], max_queue_length=3, max_batch_size=1, max_inflight_batches=1) as server:
            port = server.kserve_http_port
            running = asyncio.ensure_future(post_json(port, INFER, flink_body([1.0] * 16)))
            await eventually(lambda: server._ingress.outstanding == 1, "one item in the backend")
            queued = asyncio.ensure_future(post_json(port, INFER, flink_body([2.0] * 16)))
            await queue_depth_reaches(server, 1)
            x = np.zeros((3, 16), np.float32)  # 2 fit in the queue, 1 does not
            refused = await post_json(port, INFER, {"inputs": [{"name": "input", "datatype": "FP32", "shape": [3, 16],
                                                                 "data": x.tolist()}]})
            assert refused.status == 503 and "queue is full" in refused.json()["error"]
            await queue_depth_reaches(server, 1)  # its 2 admitted items left the queue with it
            gate.open.set()
            assert [a.status for a in await asyncio.gather(running, queued)] == [200, 200]
            counts = await settled_counts(server)
            assert counts["outcomes"] == {"received": 5, "succeeded": 2, "rejected": 1, "cancelled": 2}
            assert counts["kserve"]["http"] == {"requests": 3, "failed": 1}

    run(go())
