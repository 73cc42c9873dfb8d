"""Groups: the N items of one KServe request answered as one, driven with no I/O."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.core.kserve_groups import TRANSITIONS, Given, GroupAnswer, GroupError, Groups, State
from sidecar.core.status import Code, Failure

FAIL = Failure(Code.INVALID_ARGUMENT, "item refused")
LATE = Failure(Code.INTERNAL, "a later failure")


def out(request_id: int) -> tuple[bytes, bytes]:
    """An item's two outputs, each telling which item it came from."""
    return (f"x{request_id};".encode(), f"y{request_id};".encode())


def snapshot(groups: Groups[str]) -> tuple:
    return len(groups), groups.items, groups.tags()


def test_a_one_item_group_is_answered_at_once():
    groups: Groups[str] = Groups()
    (i,) = groups.open("t", 1)
    assert (len(groups), groups.items, groups.state(i)) == (1, 1, State.COLLECTING)
    assert groups.answered(i, out(i)) == GroupAnswer("t", 1, out(i), None)
    assert (len(groups), groups.items, groups.state(i), groups.tags()) == (0, 0, None, [])


def test_items_answered_in_any_order_join_their_outputs_in_item_order():
    groups: Groups[str] = Groups()
    ids = groups.open("t", 3)
    assert groups.answered(ids[2], out(ids[2])) is None
    assert groups.answered(ids[0], out(ids[0])) is None
    assert (len(groups), groups.items) == (1, 1)
    answer = groups.answered(ids[1], out(ids[1]))
    assert answer == GroupAnswer("t", 3, (b"x1;x2;x3;", b"y1;y2;y3;"), None)
    assert (len(groups), groups.items) == (0, 0)


def test_a_failed_group_is_answered_with_its_first_failure_once_all_items_are_in():
    groups: Groups[str] = Groups()
    ids = groups.open("t", 3)
    assert groups.answered(ids[1], None, FAIL) is None
    assert groups.state(ids[0]) is State.FAILED
    assert groups.answered(ids[2], None, LATE) is None
    assert groups.answered(ids[0], out(ids[0])) == GroupAnswer("t", 3, None, FAIL)
    assert len(groups) == 0


def test_an_early_group_is_answered_at_its_first_failure_and_absorbs_the_rest():
    groups: Groups[str] = Groups()
    ids = groups.open("t", 3, early=True)
    assert groups.answered(ids[1], None, FAIL) == GroupAnswer("t", 3, None, FAIL)
    assert (len(groups), groups.items, groups.tags()) == (1, 2, ["t"])  # still held
    assert groups.answered(ids[0], None, LATE) is None
    assert groups.answered(ids[2], out(ids[2])) is None
    assert (len(groups), groups.items) == (0, 0)


# ---- the transition table: (state, answer, last item) -> state after, and the answer given ----

TABLE = [(*key, after, given) for key, (after, given) in TRANSITIONS.items()]


def test_the_table_covers_every_state_answer_and_position():
    assert set(TRANSITIONS) == {(s, f, last, e) for s in State for f in (False, True)
                                for last in (False, True) for e in (False, True)}


@pytest.mark.parametrize("state, failed, last, early, after, given_", TABLE)
def test_each_answer_moves_the_group_as_the_table_says(state, failed, last, early, after, given_):
    groups: Groups[str] = Groups()
    a, b, c = groups.open("t", 3, early=early)
    groups.answered(a, None, FAIL) if state is State.FAILED else groups.answered(a, out(a))
    if last:
        groups.answered(b, out(b))
    item = c if last else b
    assert groups.state(item) is state
    answer = groups.answered(item, None, LATE) if failed else groups.answered(item, out(item))
    expected = {
        Given.NOTHING: None,
        Given.OUTPUTS: GroupAnswer("t", 3, (b"x1;x2;x3;", b"y1;y2;y3;"), None),
        Given.THIS_FAILURE: GroupAnswer("t", 3, None, LATE),
        Given.FIRST_FAILURE: GroupAnswer("t", 3, None, FAIL),
    }[given_]
    assert answer == expected
    assert groups.state(c) is after and len(groups) == (0 if after is None else 1)


# ---- illegal events: GroupError, and nothing changes --------------------------------------


@pytest.mark.parametrize("early", [False, True])
@pytest.mark.parametrize("prior", ["ok", "failed"])
def test_answering_an_unknown_id_or_twice_raises_and_leaves_the_groups_unchanged(early, prior):
    groups: Groups[str] = Groups()
    a, b = groups.open("t", 2, early=early)
    groups.answered(a, out(a)) if prior == "ok" else groups.answered(a, None, FAIL)
    before, state = snapshot(groups), groups.state(b)
    for bad in (a, b + 1, 0, -5):
        for outputs, failure in [(out(bad), None), (None, FAIL)]:
            with pytest.raises(GroupError):
                groups.answered(bad, outputs, failure)
            assert snapshot(groups) == before and groups.state(b) is state
        with pytest.raises(GroupError):
            groups.tag(bad)


def test_an_answer_must_be_outputs_or_a_failure_exactly_one():
    groups: Groups[str] = Groups()
    (i,) = groups.open("t", 1)
    for outputs, failure in [(None, None), (out(i), FAIL)]:
        with pytest.raises(GroupError):
            groups.answered(i, outputs, failure)
        assert snapshot(groups) == (1, 1, ["t"]) and groups.state(i) is State.COLLECTING


@pytest.mark.parametrize("n", [0, -1])
def test_a_group_of_fewer_than_one_item_cannot_be_opened(n):
    groups: Groups[str] = Groups()
    with pytest.raises(ValueError, match="at least one item"):
        groups.open("t", n)
    assert snapshot(groups) == (0, 0, []) and groups.open("u", 1) == range(1, 2)


# ---- ids and tags -------------------------------------------------------------------------


def test_ids_are_consecutive_across_groups_from_the_first_id():
    groups: Groups[str] = Groups(first_id=10)
    assert [groups.open(t, n) for t, n in [("a", 2), ("b", 1), ("c", 3)]] == [
        range(10, 12),
        range(12, 13),
        range(13, 16),
    ]


def test_tag_names_the_group_holding_an_item_until_it_is_answered():
    groups: Groups[str] = Groups()
    a, b = groups.open("first", 2)
    (c,) = groups.open("second", 1)
    assert [groups.tag(i) for i in (a, b, c)] == ["first", "first", "second"]
    groups.answered(a, out(a))
    with pytest.raises(GroupError):
        groups.tag(a)
    assert groups.tag(b) == "first"


def test_tags_lists_open_groups_once_each_oldest_first():
    groups: Groups[str] = Groups()
    a = groups.open("a", 2)
    b = groups.open("b", 1)
    groups.open("c", 2)
    assert groups.tags() == ["a", "b", "c"]
    groups.answered(b[0], out(b[0]))
    groups.answered(a[0], None, FAIL)
    assert groups.tags() == ["a", "c"]


# ---- property: random groups, answered in a random order, some items failing ---------------

scenario = st.lists(st.tuples(st.integers(1, 6), st.booleans()), min_size=1, max_size=5).flatmap(
    lambda groups: st.tuples(
        st.just(groups),
        st.permutations(range(sum(n for n, _ in groups))),
        st.sets(st.integers(0, sum(n for n, _ in groups) - 1)),
    )
)


@settings(max_examples=300, deadline=None)
@given(scenario)
def test_every_group_is_answered_exactly_once_as_the_rules_say(case):
    shape, order, failing = case
    groups: Groups[int] = Groups(first_id=1)
    ids = [groups.open(g, n, early=early) for g, (n, early) in enumerate(shape)]
    owner = {i: g for g, r in enumerate(ids) for i in r}
    failed_at: dict[int, int] = {}  # group -> id of its first failure
    left = [len(r) for r in ids]
    answered: dict[int, GroupAnswer[int]] = {}
    for step, index in enumerate(order):
        i = index + 1
        g = owner[i]
        n, early = shape[g]
        fails = index in failing
        answer = groups.answered(i, None, Failure(Code.INTERNAL, str(i))) if fails else groups.answered(i, out(i))
        left[g] -= 1
        first_failure = fails and g not in failed_at
        if first_failure:
            failed_at[g] = i
        due = (early and first_failure) or (left[g] == 0 and not (early and g in failed_at))
        assert (answer is not None) == due, (g, i, early, left[g])
        if answer is not None:
            assert g not in answered and answer.tag == g and answer.n == n
            answered[g] = answer
            if g in failed_at:
                assert answer.outputs is None and answer.failure == Failure(Code.INTERNAL, str(failed_at[g]))
            else:
                expected = tuple(b"".join(out(j)[k] for j in ids[g]) for k in range(2))
                assert answer.failure is None and answer.outputs == expected
        open_groups = [h for h in range(len(shape)) if left[h]]
        assert (len(groups), groups.items, groups.tags()) == (len(open_groups), sum(left), open_groups)
    assert sorted(answered) == list(range(len(shape)))
