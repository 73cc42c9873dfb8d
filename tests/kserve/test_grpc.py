"""inference.GRPCInferenceService on a real server, through wire-compatible stubs
(tritonclient's own tests are in test_tritonclient.py, in CI's kserve environment)."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
from google.rpc import error_details_pb2, status_pb2

from sidecar.api.kserve.v2 import inference_pb2 as kpb
from sidecar.backends.mock import MockBackend
from tests.kserve.helpers import KServeGrpc, infer_request
from tests.rpc.helpers import Gate, eventually, queue_depth_reaches, run, serving, settled_counts

X = np.arange(16, dtype=np.float32)


def test_metadata_config_readiness_answer_what_tritonclient_and_perf_analyzer_read():
    async def go() -> None:
        async with serving(max_batch_size=8, instances=2) as server:
            async with grpc.aio.insecure_channel(server.address) as channel:
                k = KServeGrpc(channel)
                assert (await k.ServerLive(kpb.ServerLiveRequest())).live
                assert (await k.ServerReady(kpb.ServerReadyRequest())).ready
                assert (await k.ModelReady(kpb.ModelReadyRequest(name="model"))).ready
                assert not (await k.ModelReady(kpb.ModelReadyRequest(name="other"))).ready
                meta = await k.ModelMetadata(kpb.ModelMetadataRequest(name="model", version="latest"))
                assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [("input", "FP32", [-1, 16])]
                config = (await k.ModelConfig(kpb.ModelConfigRequest(name="model"))).config
                assert config.max_batch_size == 8 and config.instance_group[0].count == 2
                assert config.input[0].data_type == kpb.TYPE_FP32 and list(config.input[0].dims) == [16]
                server_meta = await k.ServerMetadata(kpb.ServerMetadataRequest())
                assert server_meta.name == "gpu-sidecar" and "statistics" in server_meta.extensions
                try:
                    await k.ModelMetadata(kpb.ModelMetadataRequest(name="other"))
                    raise AssertionError("an unknown model must be NOT_FOUND")
                except grpc.aio.AioRpcError as e:
                    assert e.code() is grpc.StatusCode.NOT_FOUND and "serves 'model'" in e.details()

    run(go())


def test_model_infer_answers_batch_1_and_batch_n_with_raw_outputs_and_echoes_the_id():
    async def go() -> None:
        async with serving(max_batch_size=4) as server:
            async with grpc.aio.insecure_channel(server.address) as channel:
                k = KServeGrpc(channel)
                for n in (1, 7):
                    x = np.arange(n * 16, dtype=np.float32).reshape(n, 16)
                    response = await k.ModelInfer(infer_request("model", {"input": x}, f"id-{n}"))
                    assert response.id == f"id-{n}" and response.model_name == "model"
                    (out,) = response.outputs
                    assert (out.name, out.datatype, list(out.shape)) == ("output", "FP32", [n, 16])
                    got = np.frombuffer(response.raw_output_contents[0], np.float32).reshape(n, 16)
                    np.testing.assert_array_equal(got, x * 2)
                typed = kpb.ModelInferRequest(model_name="model", id="typed")
                typed.inputs.add(name="input", datatype="FP32", shape=[1, 16]).contents.fp32_contents.extend(X.tolist())
                response = await k.ModelInfer(typed)
                np.testing.assert_array_equal(np.frombuffer(response.raw_output_contents[0], np.float32), X * 2)
            counts = await settled_counts(server)
            assert counts["outcomes"] == {"received": 9, "succeeded": 9}  # items, not requests
            assert counts["kserve"]["grpc"] == {"requests": 3, "failed": 0}

    run(go())


def test_a_bad_request_is_invalid_argument_saying_why():
    async def go() -> None:
        async with serving() as server:
            async with grpc.aio.insecure_channel(server.address) as channel:
                k = KServeGrpc(channel)
                bad = {
                    "is not [N, 16]": infer_request("model", {"input": np.zeros((2, 15), np.float32)}),
                    "INT32 does not match the model's FP32": infer_request("model", {"input": np.zeros((1, 16), np.int32)}),
                    "raw_input_contents has 2 entries for 1 inputs": kpb.ModelInferRequest(
                        model_name="model", inputs=[kpb.ModelInferRequest.InferInputTensor(
                            name="input", datatype="FP32", shape=[1, 16])], raw_input_contents=[b"", b""]),
                    "no data": kpb.ModelInferRequest(model_name="model", inputs=[
                        kpb.ModelInferRequest.InferInputTensor(name="input", datatype="FP32", shape=[1, 16])]),
                }
                for words, request in bad.items():
                    try:
                        await k.ModelInfer(request)
                        raise AssertionError(f"{words}: accepted")
                    except grpc.aio.AioRpcError as e:
                        assert e.code() is grpc.StatusCode.INVALID_ARGUMENT and words in e.details(), e.details()
                ok = await k.ModelInfer(infer_request("model", {"input": X[None]}))
                assert len(ok.raw_output_contents) == 1

    run(go())


def test_overload_is_resource_exhausted_with_retry_info_in_the_status_details():
    gate = Gate(opened=False)

    async def go() -> None:
        backend = MockBackend("mock:?base_ms=1&per_item_ms=0", sleep=gate)
        async with serving(backends=[backend], max_queue_length=1, max_batch_size=1, max_inflight_batches=1) as server:
            async with grpc.aio.insecure_channel(server.address) as channel:
                k = KServeGrpc(channel)
                running = asyncio.ensure_future(k.ModelInfer(infer_request("model", {"input": X[None]})))
                await eventually(lambda: server._ingress.outstanding == 1, "the first request in the backend")
                queued = asyncio.ensure_future(k.ModelInfer(infer_request("model", {"input": X[None]})))
                await queue_depth_reaches(server, 1)
                try:
                    await k.ModelInfer(infer_request("model", {"input": X[None]}))
                    raise AssertionError("a full queue must refuse")
                except grpc.aio.AioRpcError as e:
                    assert e.code() is grpc.StatusCode.RESOURCE_EXHAUSTED and "queue is full" in e.details()
                    # Pairs, not dict(): grpc.aio's Metadata.keys() yields pairs on 1.65.
                    (details,) = [v for k, v in e.trailing_metadata() if k == "grpc-status-details-bin"]
                    status = status_pb2.Status.FromString(details)
                    info = error_details_pb2.RetryInfo()
                    assert status.details[0].Unpack(info) and info.retry_delay.ToNanoseconds() > 0
                gate.open.set()
                await asyncio.gather(running, queued)

    run(go())


def test_stream_infer_answers_many_in_flight_and_an_error_ends_only_its_own_request():
    async def go() -> None:
        async with serving(max_batch_size=8) as server:
            async with grpc.aio.insecure_channel(server.address) as channel:
                k = KServeGrpc(channel)
                call = k.ModelStreamInfer()
                for i in range(40):
                    shape = (1, 15) if i == 17 else (2, 16)
                    await call.write(infer_request("model", {"input": np.full(shape, i, np.float32)}, f"r{i}"))
                answers = {}
                for _ in range(40):
                    m = await call.read()
                    answers[m.infer_response.id] = m
                assert set(answers) == {f"r{i}" for i in range(40)}
                assert "[INVALID_ARGUMENT]" in answers["r17"].error_message and "is not [N, 16]" in answers["r17"].error_message
                for i in set(range(40)) - {17}:
                    m = answers[f"r{i}"]
                    assert not m.error_message
                    got = np.frombuffer(m.infer_response.raw_output_contents[0], np.float32)
                    np.testing.assert_array_equal(got, np.full(32, 2.0 * i))
                # still open after the error: one more, then half-close ends the call OK
                await call.write(infer_request("model", {"input": X[None]}, "last"))
                assert (await call.read()).infer_response.id == "last"
                await call.done_writing()
                assert await call.code() is grpc.StatusCode.OK
            counts = await settled_counts(server)
            assert counts["outcomes"] == {"received": 78 + 1 + 1, "succeeded": 79, "invalid": 1}

    run(go())


def test_an_unparsable_frame_on_the_stream_is_answered_and_the_stream_goes_on():
    async def go() -> None:
        async with serving() as server:
            async with grpc.aio.insecure_channel(server.address) as channel:
                raw = channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer",
                                            request_serializer=lambda b: b,
                                            response_deserializer=kpb.ModelStreamInferResponse.FromString)
                call = raw()
                await call.write(b"\xff\xff\xff")
                bad = await call.read()
                assert "is not a ModelInferRequest" in bad.error_message
                await call.write(infer_request("model", {"input": X[None]}, "ok").SerializeToString())
                assert (await call.read()).infer_response.id == "ok"
                await call.done_writing()
                assert await call.code() is grpc.StatusCode.OK

    run(go())


def test_a_stream_client_that_goes_away_leaves_nothing_behind():
    gate = Gate(opened=False)

    async def go() -> None:
        backend = MockBackend("mock:?base_ms=1&per_item_ms=0", sleep=gate)
        async with serving(backends=[backend], max_batch_size=2, max_inflight_batches=1) as server:
            async with grpc.aio.insecure_channel(server.address) as channel:
                call = KServeGrpc(channel).ModelStreamInfer()
                for i in range(10):
                    await call.write(infer_request("model", {"input": np.zeros((3, 16), np.float32)}, f"r{i}"))
                await eventually(lambda: server._ingress.outstanding == 30, "30 items read")
                call.cancel()
                await eventually(lambda: server._ingress.open_streams == 0, "the stream to close")
            gate.open.set()
            counts = await settled_counts(server)
            # Nothing reached the client: the batch in the backend too is answered after it left.
            assert counts["outcomes"] == {"received": 30, "cancelled": 30}

    run(go())
