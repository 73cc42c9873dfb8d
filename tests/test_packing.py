"""Client-side batch-major packing (sidecar/packing.py)."""

from __future__ import annotations

import numpy as np

from sidecar.api.v1 import gpu_sidecar_pb2 as pb
from sidecar.packing import pack, row_of
from sidecar.wire import duration


def submitted(specs: list[tuple[dict, float | None, bool]]) -> tuple[list[int], list[pb.InferRequest], dict]:
    ids, requests, rows = [], [], {}
    for i, (inputs, timeout, timing) in enumerate(specs, start=1):
        row, tensors = row_of(inputs, timeout, timing)
        ids.append(i)
        requests.append(pb.InferRequest(request_id=i, inputs=tensors))
        rows[i] = row
    return ids, requests, rows


def test_alike_requests_become_one_batch_in_submission_order():
    x = [np.full(4, i, np.float32) for i in range(5)]
    ids, requests, rows = submitted([({"input": v}, None, False) for v in x])
    plain, batches = pack(ids, requests, rows, duration)
    assert plain == []
    (b,) = batches
    assert list(b.request_ids) == ids and not b.HasField("timeout")
    (t,) = b.inputs
    assert (t.name, t.dtype, list(t.shape)) == ("input", "float32", [5, 4])
    np.testing.assert_array_equal(np.frombuffer(t.data, np.float32).reshape(5, 4), np.stack(x))


def test_requests_that_differ_in_shape_or_settings_go_apart_and_singles_go_plain():
    f4, f8 = np.zeros(4, np.float32), np.zeros(8, np.float32)
    ids, requests, rows = submitted([
        ({"input": f4}, None, False), ({"input": f8}, None, False), ({"input": f4}, 0.5, False),
        ({"input": f4}, None, False), ({"input": f4}, 0.5, False), ({"input": f4}, None, True),
    ])
    rows.pop(6)  # sent as is (submit_raw): no row
    plain, batches = pack(ids, requests, rows, duration)
    assert sorted(r.request_id for r in plain) == [2, 6]
    by_ids = {tuple(b.request_ids): b for b in batches}
    assert set(by_ids) == {(1, 4), (3, 5)}
    assert by_ids[(3, 5)].timeout.ToMilliseconds() == 500
