"""The writer packs answers by wire_size_bound: never below the real size, and
close to it, so a packed message stays under its budget without being built twice."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.core.answer import Answer, Timing
from sidecar.core.status import Code, Failure
from sidecar.core.tensors import TensorSpec
from sidecar.rpc.convert import output_templates, to_wire, wire_size_bound

SPECS = (TensorSpec("output", "float32", (4,)), TensorSpec("scores_with_a_longer_name", "int64", (2, 3)))
TEMPLATES = output_templates(SPECS)
SIZES = tuple(t.ByteSize() for t in TEMPLATES)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, 2**64 - 1),
    st.lists(st.integers(0, 70_000), min_size=2, max_size=2),
    st.none() | st.tuples(st.floats(0, 1e6), st.floats(0, 1e6), st.integers(0, 2**31)),
)
def test_the_bound_is_never_below_the_real_size_and_within_its_slack(request_id, lengths, timing):
    answer = Answer(request_id, tuple(b"x" * n for n in lengths), None, Timing(*timing) if timing else None)
    real = to_wire(answer, TEMPLATES).ByteSize()
    bound = wire_size_bound(answer, SIZES)
    assert real <= bound <= real + 11 + 64


def test_a_failure_is_measured_exactly():
    answer = Answer(7, None, Failure(Code.RESOURCE_EXHAUSTED, "queue is full", retry_after_s=0.25))
    assert wire_size_bound(answer, SIZES) == to_wire(answer, TEMPLATES).ByteSize()
