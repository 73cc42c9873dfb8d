"""Items in batch-major form (InferStreamRequest.batches), through the real server."""

from __future__ import annotations

import grpc
import numpy as np

from sidecar.api.v1 import gpu_sidecar_pb2 as pb
from sidecar.client import SidecarClient
from tests.rpc.helpers import run, serving, settled_counts

INVALID = grpc.StatusCode.INVALID_ARGUMENT.value[0]


def rows(n: int, first: float = 0.0) -> np.ndarray:
    return (np.arange(n * 16, dtype=np.float32) + first).reshape(n, 16)


def batch(ids: list[int], x: np.ndarray, **fields) -> pb.InferBatch:
    tensor = pb.Tensor(name="input", dtype="float32", shape=x.shape, data=x.tobytes())
    return pb.InferBatch(request_ids=ids, inputs=[tensor], **fields)


async def exchange(client: SidecarClient, *messages: pb.InferStreamRequest) -> dict[int, list[pb.InferResponse]]:
    call = client.stub.Infer()
    for m in messages:
        await call.write(m)
    await call.done_writing()
    answers: dict[int, list[pb.InferResponse]] = {}
    async for m in call:
        for r in m.responses:
            answers.setdefault(r.request_id, []).append(r)
    return answers


async def refused(client: SidecarClient, message: pb.InferStreamRequest) -> str:
    """Sends one message that the stream cannot take: nothing is answered, the call
    ends INVALID_ARGUMENT; returns its details."""
    call = client.stub.Infer()
    await call.write(message)
    await call.done_writing()
    try:
        async for _ in call:
            raise AssertionError("a message past the window was answered")
    except grpc.aio.AioRpcError:
        pass
    assert await call.code() == grpc.StatusCode.INVALID_ARGUMENT
    return await call.details()


def test_each_item_of_a_batch_is_answered_under_its_own_id_with_its_own_row():
    async def go():
        async with serving() as server:
            async with SidecarClient(server.address) as client:
                info = await client.model_info()
                assert info.limits.batch_major_requests
                x = rows(40)
                answers = await exchange(client, pb.InferStreamRequest(batches=[batch(list(range(100, 140)), x)]))
                assert sorted(answers) == list(range(100, 140))
                for i, request_id in enumerate(range(100, 140)):
                    (r,) = answers[request_id]
                    out = np.frombuffer(r.outputs[0].data, np.float32)
                    np.testing.assert_array_equal(out, x[i] * 2)
                    assert list(r.outputs[0].shape) == [16]
            counts = await settled_counts(server)
            assert counts["outcomes"] == {"received": 40, "succeeded": 40}

    run(go())


def test_a_batch_that_does_not_fit_fails_all_its_items_and_nothing_else():
    async def go():
        async with serving() as server:
            async with SidecarClient(server.address) as client:
                plain = pb.InferRequest(request_id=1, inputs=[batch([], rows(1)[0]).inputs[0]])
                good = batch([10, 11], rows(2))
                short = batch([20, 21, 22], rows(2))  # 3 ids, 2 rows
                wide = pb.InferBatch(request_ids=[30, 31], inputs=[
                    pb.Tensor(name="input", dtype="float32", shape=[2, 17], data=np.zeros(34, np.float32).tobytes())
                ])
                torn = batch([40, 41], rows(2))
                torn.inputs[0].data = torn.inputs[0].data[:-4]
                answers = await exchange(client, pb.InferStreamRequest(requests=[plain], batches=[good, short, wide, torn]))
                ok = {i for i, (r,) in answers.items() if not r.HasField("error")}
                assert ok == {1, 10, 11}
                for i in (20, 21, 22):
                    assert answers[i][0].error.code == INVALID
                    assert "must lead with the batch's 3 item(s)" in answers[i][0].error.message
                assert "per-item shape" in answers[30][0].error.message
                assert "62 bytes, but float32 x [16] needs 64" in answers[41][0].error.message  # per item
            counts = await settled_counts(server)
            assert counts["outcomes"] == {"received": 10, "succeeded": 3, "invalid": 7}

    run(go())


def test_a_duplicate_id_fails_only_itself_and_timeouts_apply_per_item():
    async def go():
        async with serving() as server:
            async with SidecarClient(server.address) as client:
                dup = batch([5, 6, 5], rows(3))
                bad_timeout = batch([7, 8], rows(2), timeout={"nanos": -1})
                answers = await exchange(client, pb.InferStreamRequest(batches=[dup, bad_timeout]))
                assert [r.error.code for r in answers[5]].count(0) == 1
                assert any("already in flight" in r.error.message for r in answers[5])
                assert not answers[6][0].HasField("error")
                assert all("timeout must be positive" in answers[i][0].error.message for i in (7, 8))

    run(go())


def test_a_message_with_more_batch_items_than_the_window_ends_the_stream():
    async def go():
        async with serving(max_outstanding=8) as server:
            async with SidecarClient(server.address) as client:
                details = await refused(client, pb.InferStreamRequest(batches=[batch(list(range(9)), rows(9))]))
                assert "carries 9 requests, more than the stream's window of 8" in details

    run(go())


def test_the_client_packs_alike_requests_as_batches_and_gets_every_answer():
    async def go():
        async with serving(max_batch_size=32) as server:
            async with SidecarClient(server.address, max_pack=64) as client:
                values = [np.full(16, i, np.float32) for i in range(300)]
                odd = [np.full(8, i, np.int32) for i in range(3)]  # not the model's: answered INVALID
                futures = [client.submit({"input": v}) for v in values]
                bad = [client.submit({"input": v}) for v in odd]
                for v, out in zip(values, [await f for f in futures]):
                    np.testing.assert_array_equal(out["output"], v * 2)
                for f in bad:
                    try:
                        await f
                    except Exception as e:  # noqa: BLE001 - InferError, checked below
                        assert getattr(e, "code", None) == grpc.StatusCode.INVALID_ARGUMENT
                    else:
                        raise AssertionError("an input of the wrong dtype was answered")
                assert client.counts == {"sent": 303, "OK": 300, "INVALID_ARGUMENT": 3}
                assert not client._rows  # every row was dropped once sent

    run(go())


def test_empty_batches_count_towards_the_window():
    async def go():
        async with serving(max_outstanding=8) as server:
            async with SidecarClient(server.address) as client:
                await refused(client, pb.InferStreamRequest(batches=[pb.InferBatch() for _ in range(100_000)]))

    run(go())


def test_a_submit_refused_for_an_id_in_flight_keeps_no_row():
    """Its inputs must never go out under the other request's id."""

    async def go():
        async with serving(model_uri="mock:?base_ms=50") as server:
            async with SidecarClient(server.address) as client:
                first = client.submit_raw(pb.InferRequest(request_id=1, inputs=[batch([], rows(1)[0]).inputs[0]]))
                try:
                    client.submit({"input": rows(1, 7.0)[0]})  # draws id 1: already in flight
                except ValueError:
                    pass
                else:
                    raise AssertionError("an id in flight was accepted twice")
                assert 1 not in client._rows
                out = await first
                np.testing.assert_array_equal(out["output"], rows(1)[0] * 2)

    run(go())
