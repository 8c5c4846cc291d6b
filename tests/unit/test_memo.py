"""The memos: remembered by identity (never by an id another object took
over), within their bound; what the xDS server's streams share through them."""

from __future__ import annotations

import gc
import itertools
import weakref

import pytest

from sailplane.memo import IdentityMemo, WeakIdentityMemo, WeakKeyIdentityMemo
from sailplane.xds import CLUSTER, TypeResources
from sailplane.xds.diff import Diffs
from sailplane.xds.server.delta import new_unions, union


class Key:
    """A weakly referable object, equal to every other Key."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Key)

    def __hash__(self) -> int:
        return 0


def test_identity_not_equality() -> None:
    memo: IdentityMemo[str] = IdentityMemo(4)
    a, b = Key(), Key()
    memo.put((a, b), "a,b")
    assert memo.get(a, b) == "a,b"
    assert memo.get(b, a) is None
    assert memo.get(Key(), b) is None


def test_the_least_recently_used_go_first() -> None:
    memo: IdentityMemo[int] = IdentityMemo(2)
    keys = [Key() for _ in range(3)]
    memo.put((keys[0],), 0)
    memo.put((keys[1],), 1)
    assert memo.get(keys[0]) == 0  # now 1 is the least recently used
    memo.put((keys[2],), 2)
    assert len(memo) == 2
    assert memo.get(keys[1]) is None
    assert (memo.get(keys[0]), memo.get(keys[2])) == (0, 2)


def test_the_newest_entry_asked_again_stays_newest_and_answers_only_for_its_objects() -> None:
    """Many callers asking the same thing in a row (2,000 streams, one step)
    find the newest entry without moving it; it still goes with its objects."""
    memo: WeakIdentityMemo[frozenset[str]] = WeakIdentityMemo(2)
    keys = [Key() for _ in range(3)]
    values = [frozenset({str(i)}) for i in range(3)]
    memo.put((keys[0],), values[0])
    memo.put((keys[1],), values[1])
    assert memo.get(keys[0]) is values[0]  # 0 is the newest now
    assert memo.get(keys[0]) is values[0]  # asked again: still the newest
    memo.put((keys[2],), values[2])
    assert memo.get(keys[1]) is None  # 1 was the least recently used
    assert memo.get(keys[2]) is values[2]
    del values[2]
    gc.collect()
    assert memo.get(keys[2]) is None  # the newest, but its value went
    assert memo.get(keys[2]) is None
    assert len(memo) == 1


def test_an_entry_holds_its_objects_so_their_ids_stay_theirs() -> None:
    memo: IdentityMemo[str] = IdentityMemo(2)
    key = Key()
    alive = weakref.ref(key)
    memo.put((key,), "value")
    del key
    gc.collect()
    assert alive() is not None
    memo.clear()
    gc.collect()
    assert alive() is None


def test_a_weak_entry_goes_with_its_objects_or_its_value() -> None:
    memo: WeakIdentityMemo[frozenset[str]] = WeakIdentityMemo(8)
    key, value = Key(), frozenset({"a"})
    alive = weakref.ref(key)
    memo.put((key,), value)
    assert memo.get(key) is value
    del value
    gc.collect()
    assert memo.get(key) is None  # the value went: nobody shares it any more
    value = frozenset({"b"})
    memo.put((key,), value)
    del key
    gc.collect()
    assert alive() is None  # not held by the memo
    assert len(memo) == 1  # a dead entry waits for eviction; it answers for nobody


def test_a_weak_key_entry_keeps_its_value_and_goes_with_its_objects() -> None:
    memo: WeakKeyIdentityMemo[frozenset[str]] = WeakKeyIdentityMemo(8)
    old, new = Key(), Key()
    alive = weakref.ref(old)
    memo.put((old, new), frozenset({"a"}))
    gc.collect()
    assert memo.get(old, new) == frozenset({"a"})  # nobody else holds the value: kept
    assert memo.get(new, old) is None
    del old
    gc.collect()
    assert alive() is None  # not held by the memo
    assert len(memo) == 0  # and its entry went with it
    memo.put((new, Key()), frozenset())  # an object that dies at once takes its entry
    assert len(memo) == 0


@pytest.mark.parametrize("memo", [IdentityMemo, WeakIdentityMemo, WeakKeyIdentityMemo])
def test_a_memo_has_room(memo: type[IdentityMemo[int]]) -> None:
    with pytest.raises(ValueError, match="at least one entry"):
        memo(0)


def test_diffs_are_computed_once_per_pair() -> None:
    def resources(**values: bytes) -> TypeResources:
        return TypeResources.from_values(CLUSTER, values.items())

    old = resources(a=b"1", b=b"2", c=b"3")
    new = resources(a=b"1", b=b"two", d=b"4")
    diffs = Diffs(pairs=2)
    changed = diffs.changed(old, new)
    assert changed == {"b", "c", "d"}
    assert diffs.changed(old, new) is changed
    assert sorted(diffs.removed(old, new)) == ["c"]
    assert diffs.changed(new, new) == frozenset()


def test_diffs_keep_no_generation_alive() -> None:
    """Each push compares a type's resources with their successor; the memo
    of those comparisons must not hold the generations it compared (it held
    up to 256 of them, megabytes each at 1,000 services)."""
    diffs = Diffs()
    generations = [
        TypeResources.from_values(CLUSTER, [("a", bytes([i])), ("b", b"2")]) for i in range(5)
    ]
    for old, new in itertools.pairwise(generations):
        assert diffs.changed(old, new) == {"a"}
    gone = [weakref.ref(g) for g in generations[:-1]]
    del generations[:-1], old, new
    gc.collect()
    assert [ref() for ref in gone] == [None] * 4


def test_delta_streams_making_the_same_step_share_one_set() -> None:
    unions = new_unions()
    have = frozenset(f"name-{i}" for i in range(20))
    added = frozenset(f"more-{i}" for i in range(20))
    first = union(have, added, unions)
    assert first == have | added
    assert union(have, added, unions) is first
    assert union(frozenset(), added, unions) is added
