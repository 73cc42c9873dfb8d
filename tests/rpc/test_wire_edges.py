"""Edges of the wire that foreign clients reach: frames that do not parse, a stock
4 MiB receive limit, reflection v1."""

from __future__ import annotations

import asyncio
import gc
import logging
import random
from collections import Counter

import grpc
import numpy as np
from google.protobuf.message import DecodeError
from grpc_reflection.v1alpha import reflection_pb2 as alpha

from sidecar.api.v1 import gpu_sidecar_pb2 as pb
from sidecar.api.v1 import gpu_sidecar_pb2_grpc as pb_grpc
from sidecar.client import to_tensor
from sidecar.logs import Throttle
from sidecar.server import servicer
from sidecar.server.servicer import BAD_FRAME_LOG_INTERVAL_S
from tests.rpc.helpers import WAIT_S, run, serving

INFER = "/gpusidecar.v1.GpuSidecar/Infer"
STOCK_RECEIVE_LIMIT = 4 * 1024 * 1024  # grpc-java, -go, -js and Python's default


def _valid(request_id: int) -> bytes:
    data = to_tensor("input", np.full(16, request_id, np.float32))
    return pb.InferStreamRequest(requests=[pb.InferRequest(request_id=request_id, inputs=[data])]).SerializeToString()


def _mutations(n: int, seed: int = 7) -> list[bytes]:
    """Frames made from a valid one by flipping, cutting and splicing bytes."""
    rng = random.Random(seed)
    base = _valid(2)
    frames = []
    for _ in range(n):
        frame = bytearray(base)
        match rng.randrange(3):
            case 0:
                for _ in range(rng.randint(1, 4)):
                    frame[rng.randrange(len(frame))] = rng.randrange(256)
            case 1:
                del frame[rng.randrange(1, len(frame)) :]
            case 2:
                at = rng.randrange(len(frame))
                frame[at:at] = rng.randbytes(rng.randint(1, 8))
        frames.append(bytes(frame))
    return frames


def _parses(frame: bytes) -> bool:
    try:
        pb.InferStreamRequest.FromString(frame)
    except DecodeError:
        return False
    return True


def test_calls_ended_early_by_bad_frames_do_not_use_up_the_connections_streams(monkeypatch):
    # A reader that stops at a bad frame must end the call's request generator itself:
    # with grpcio 1.65, one left to the garbage collector kept its HTTP/2 stream counted,
    # and after ~256 such calls (sidecar.rpc.max-concurrent-streams) on one connection
    # new streams were refused. The collector is off here, so only the server can end them.
    frames = [f for f in _mutations(3000) if not _parses(f)][:600]
    assert len(frames) == 600
    # Its own log throttle, so the other tests still see their first "bad frame" line.
    monkeypatch.setattr(servicer, "_bad_frames", Throttle(BAD_FRAME_LOG_INTERVAL_S))

    async def ended(channel: grpc.aio.Channel, frame: bytes) -> grpc.StatusCode:
        call = channel.stream_stream(INFER, request_serializer=bytes, response_deserializer=pb.InferStreamResponse.FromString)()
        try:
            await call.write(_valid(1))
            await call.write(frame)
            await call.done_writing()
            async for _ in call:
                pass
        except grpc.aio.AioRpcError:
            pass  # a refused stream fails the write already; the status is read below
        return await call.code()

    async def scenario() -> list[grpc.StatusCode]:
        codes: list[grpc.StatusCode] = []
        async with serving() as server:
            async with grpc.aio.insecure_channel(server.address) as channel:
                gc.collect()
                gc.disable()
                try:
                    for start in range(0, len(frames), 50):
                        batch = [ended(channel, f) for f in frames[start : start + 50]]
                        codes += await asyncio.wait_for(asyncio.gather(*batch), WAIT_S)
                finally:
                    gc.enable()
        return codes

    codes = run(scenario())
    assert Counter(codes) == {grpc.StatusCode.INVALID_ARGUMENT: len(frames)}


def test_mutated_frames_end_their_call_invalid_argument_after_answering_what_came_before(caplog):
    frames = _mutations(1000)
    unparsable = [f for f in frames if not _parses(f)]
    assert len(unparsable) > 200  # the mutations do reach the parser's error paths

    async def one(channel: grpc.aio.Channel, frame: bytes) -> tuple[grpc.StatusCode, list[pb.InferResponse]]:
        call = channel.stream_stream(INFER, request_serializer=bytes, response_deserializer=pb.InferStreamResponse.FromString)()
        await call.write(_valid(1))
        await call.write(frame)
        await call.done_writing()
        responses: list[pb.InferResponse] = []
        try:
            async for reply in call:
                responses.extend(reply.responses)
        except grpc.aio.AioRpcError:
            pass  # the status is read below
        return await call.code(), responses

    async def scenario() -> None:
        async with serving() as server:
            async with grpc.aio.insecure_channel(server.address) as channel:
                for start in range(0, len(frames), 50):
                    results = await asyncio.wait_for(
                        asyncio.gather(*[one(channel, f) for f in frames[start : start + 50]]), WAIT_S
                    )
                    for frame, (code, responses) in zip(frames[start : start + 50], results):
                        first = [r for r in responses if r.request_id == 1]
                        assert len(first) == 1 and not first[0].HasField("error")  # the request before is answered
                        if _parses(frame):
                            assert code == grpc.StatusCode.OK  # whatever it held was answered, valid or not
                        else:
                            assert code == grpc.StatusCode.INVALID_ARGUMENT
                # The server is unharmed.
                stub = pb_grpc.GpuSidecarStub(channel)
                assert (await stub.Ping(pb.PingRequest(), timeout=5)).version

    with caplog.at_level(logging.DEBUG):
        run(scenario())
    text = caplog.text
    assert "Traceback" not in text
    bad_lines = [r for r in caplog.records if r.getMessage() == "bad frame"]
    assert 1 <= len(bad_lines) <= 3, len(bad_lines)  # rate-limited: one per interval
    print(f"\n{len(unparsable)} unparsable of {len(frames)} mutated frames: INVALID_ARGUMENT each, {len(bad_lines)} log line(s)")


def test_stock_client_with_a_4_mib_receive_limit_gets_every_256_kib_answer():
    dim = 65536  # float32: 256 KiB per output

    async def scenario() -> None:
        async with serving(model_uri=f"mock:?base_ms=0&per_item_ms=0&dim={dim}", max_batch_size=32) as server:
            async with grpc.aio.insecure_channel(server.address) as channel:  # stock options
                call = pb_grpc.GpuSidecarStub(channel).Infer()
                for i in range(64):
                    data = to_tensor("input", np.full(dim, i, np.float32))
                    await call.write(pb.InferStreamRequest(requests=[pb.InferRequest(request_id=i + 1, inputs=[data])]))
                await call.done_writing()
                seen, biggest = set(), 0
                async for reply in call:
                    biggest = max(biggest, reply.ByteSize())
                    for r in reply.responses:
                        assert not r.HasField("error"), r.error
                        seen.add(r.request_id)
                assert await call.code() == grpc.StatusCode.OK
                assert seen == set(range(1, 65))
                assert biggest <= STOCK_RECEIVE_LIMIT
                print(f"\n64 answers of 256 KiB through a 4 MiB receive limit; largest message {biggest / 2**20:.2f} MiB")

    run(scenario())


def test_reflection_answers_v1_and_v1alpha():
    async def list_services(channel: grpc.aio.Channel, service: str) -> set[str]:
        call = channel.stream_stream(
            f"/{service}/ServerReflectionInfo",
            request_serializer=alpha.ServerReflectionRequest.SerializeToString,
            response_deserializer=alpha.ServerReflectionResponse.FromString,
        )()
        await call.write(alpha.ServerReflectionRequest(list_services=""))
        reply = await asyncio.wait_for(call.read(), WAIT_S)
        await call.done_writing()
        return {s.name for s in reply.list_services_response.service}

    async def scenario() -> None:
        async with serving() as server:
            async with grpc.aio.insecure_channel(server.address) as channel:
                for service in ("grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"):
                    names = await list_services(channel, service)
                    assert {"gpusidecar.v1.GpuSidecar", "grpc.health.v1.Health", service} <= names

    run(scenario())


def test_a_message_packing_more_requests_than_the_window_ends_the_call_invalid_argument_at_once():
    async def scenario() -> None:
        async with serving(max_outstanding=64) as server:
            async with grpc.aio.insecure_channel(server.address) as channel:
                call = pb_grpc.GpuSidecarStub(channel).Infer()
                await call.write(pb.InferStreamRequest.FromString(_valid(1)))
                # 200,000 empty requests: 400 KB on the wire, seconds of session time if taken in
                bomb = pb.InferStreamRequest(requests=[pb.InferRequest(request_id=i) for i in range(2, 200_002)])
                started = asyncio.get_running_loop().time()
                await call.write(bomb)
                responses = []
                try:
                    async for reply in call:
                        responses.extend(reply.responses)
                except grpc.aio.AioRpcError:
                    pass
                took = asyncio.get_running_loop().time() - started
                assert await call.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert "more than the stream's window of 64" in await call.details()
                assert [r.request_id for r in responses] == [1] and not responses[0].HasField("error")
                assert (await pb_grpc.GpuSidecarStub(channel).Ping(pb.PingRequest(), timeout=5)).version
                print(f"\na message of 200,000 requests ended its call in {took * 1e3:.1f} ms")

    run(scenario())
