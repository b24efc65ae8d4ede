"""The native copier (_copier.c, _copy.py): trees of built-in objects cross interpreters
without pickle, with their exact types, shared references and cycles; what is not a
built-in is pickled as a leaf; nothing leaks, and corrupt or changing input never
crashes."""

from __future__ import annotations

import collections
import concurrent.futures
import enum
import math
import pickle
import random
import sys
import threading

import pytest

from manygil import InterpreterPoolExecutor, _copy, _transport
from manygil import interpreters as I

from . import helpers


def trip(value):
    """``value`` copied and rebuilt in this interpreter, and whether the copier (not
    pickle) carried it."""
    data = _copy.dumps(value)
    if data is None:
        return pickle.loads(pickle.dumps(value, protocol=5)), False
    assert data[0] == _copy.MAGIC
    return _copy.loads(data), True


INTS = [0, 1, -1, 127, 128, -128, -129, 2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 2**63 - 1, 2**63,
        -(2**63), -(2**63) - 1, 2**64, 10**100, -(10**100), 7**1000]
STRS = ["", "a", "ascii text", "é latin-1 ÿ", "€ two bytes", "😀 four bytes", "\ud800 lone surrogate",
        "\x00nul", "x" * 100_000]


def same(a, b):
    """Equal with the exact same types all the way down (floats: NaN equals NaN, and the
    sign of zero counts)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return a == b


@pytest.mark.parametrize(
    "value",
    [
        [None, True, False],
        INTS,
        [0.0, -0.0, 1.5, math.inf, -math.inf, math.nan, 1e308, 5e-324],
        [1 + 2j, complex(math.inf, -0.0), 0j],
        STRS,
        [b"", b"\x00\xff", bytes(range(256)) * 100],
        [bytearray(b""), bytearray(b"abc")],
        ((), (1,), (1, (2, (3,)))),
        [[], [[]], [1, [2, [3]]]],
        {"a": 1, 2: "b", (3, 4): [5], None: {}, 1.5: frozenset({1})},
        [set(), {1, 2, 3}, {"a", (1, 2)}, frozenset(), frozenset({frozenset({1}), 2})],
        {"records": [{"id": i, "tags": [f"t{i}", "a"], "score": i * 0.1} for i in range(50)]},
    ],
    ids=["singletons", "ints", "floats", "complex", "strs", "bytes", "bytearray", "tuples", "lists", "dict",
         "sets", "records"],
)
def test_every_builtin_type_round_trips_with_its_exact_type(value):
    out, copied = trip(value)
    assert copied
    assert same(out, value)
    assert out is not value or isinstance(value, tuple) and not value


def test_dict_order_and_keys_of_every_kind_are_kept():
    value = {k: i for i, k in enumerate(["z", 3, "a", (1, "x"), None, 2.5, frozenset({1}), b"k", True])}
    out, copied = trip(value)
    assert copied and list(out.items()) == list(value.items())


class Color(enum.Enum):
    RED = 1


class Level(enum.IntEnum):
    HIGH = 3


@pytest.mark.parametrize(
    "leaf",
    [helpers.MyList([1, 2]), Color.RED, Level.HIGH, collections.OrderedDict(a=1), collections.defaultdict(list),
     helpers.Holder([1, 2]), helpers.add, len, int, range(3)],
    ids=["list-subclass", "enum", "int-enum", "ordereddict", "defaultdict", "instance", "function", "builtin",
         "type", "range"],
)
def test_subclasses_and_other_types_are_pickled_as_leaves_of_a_copied_tree(leaf):
    value = {"leaf": leaf, "plain": [1, "two", 3.0], "key": {leaf: 1} if _hashable(leaf) else None}
    out, copied = trip(value)
    assert copied  # the tree is copied; only the leaf is pickled
    assert type(out["leaf"]) is type(leaf) and out["leaf"] == leaf
    assert same(out["plain"], value["plain"])
    if _hashable(leaf):
        assert list(out["key"]) == [leaf]


def _hashable(obj):
    try:
        hash(obj)
    except TypeError:
        return False
    return True


def test_a_value_that_is_itself_a_leaf_is_pickled_whole():
    assert _copy.dumps(helpers.Holder(1)) is None
    assert _copy.dumps(helpers.MyList([1])) is None
    assert _copy.loads(pickle.dumps(helpers.Holder(1), protocol=5)) == helpers.Holder(1)


def test_leaves_keep_their_identity_with_each_other():
    leaf = helpers.Holder(1)
    out, copied = trip([leaf, (leaf,), {"x": leaf}])
    assert copied and out[0] is out[1][0] is out[2]["x"]


def test_shared_references_and_cycles_are_kept():
    shared = [1, 2]
    value = [shared, shared, {"again": shared}]
    out, copied = trip(value)
    assert copied and out[0] is out[1] is out[2]["again"]

    loop = [1]
    loop.append(loop)
    out, copied = trip(loop)
    assert copied and out[1] is out

    d = {}
    d["self"] = d
    d["list"] = [d]
    out, copied = trip(d)
    assert copied and out["self"] is out and out["list"][0] is out

    s = "a shared string, " * 3
    out, copied = trip([s, s, {s: s}])
    assert copied and out[0] is out[1] and next(iter(out[2])) is out[0]

    t = (1, 2)
    out, copied = trip([t, t, {t: t}])
    assert copied and out[0] is out[1] and next(iter(out[2])) is out[0]

    b = bytearray(b"mutable")
    out, copied = trip([b, b])
    assert copied and out[0] is out[1]

    f = frozenset({1, "x"})
    out, copied = trip([f, {f: f}, (f,)])
    assert copied and out[0] is next(iter(out[1])) is out[1][out[0]] is out[2][0]


def test_dict_values_and_set_items_are_remembered_only_when_shared():
    """The walk's own references do not count: a dict of 200 strings referenced once has
    a memo of one entry at most (the dict, which the caller holds too, unless 3.14+
    borrows that reference)."""
    value = {i: f"s{i}" for i in range(200)}
    data = _copy.dumps(value)
    assert int.from_bytes(data[2:6], sys.byteorder) <= 1
    value = {f"s{i}" for i in range(200)}
    assert int.from_bytes(_copy.dumps(value)[2:6], sys.byteorder) <= 1


def test_a_bound_method_of_a_built_in_keeps_its_object():
    items = [1]
    out = _copy.loads(_transport.dumps([items, items.append])[1])
    out[1](2)
    assert out[0] == [1, 2]
    d = {"k": 1}
    out = _copy.loads(_transport.dumps((d.get, d))[1])
    assert out[0].__self__ is out[1]
    # A module's function pickles by name: the tree is still copied.
    assert _transport.dumps([items, len])[1][0] == _copy.MAGIC


def test_a_cycle_through_a_tuple_is_pickled_whole_and_kept():
    inner = []
    t = (inner, 1)
    inner.append(t)
    assert _copy.dumps(t) is None  # a reference into a tuple still being written
    data = _transport.dumps(t)[1]
    assert data[:1] == b"\x80"  # a pickle
    out = _copy.loads(data)
    assert out[0][0] is out


def test_a_leaf_that_holds_part_of_the_tree_sends_the_whole_value_by_pickle():
    part = [1, 2, 3]
    holder = helpers.Holder(part)
    value = [holder, part]
    assert _copy.dumps(value) is None  # the leaf's pickle reaches into the tree
    out = _copy.loads(_transport.dumps(value)[1])
    assert out[0].data is out[1]


def test_deep_nesting_is_no_crash():
    for depth in (1_000, 100_000):
        value = helpers.make_deep(depth)
        out, copied = trip(value)
        assert copied and helpers.depth_of(out) == depth
    deep_dict = cur = {}
    for _ in range(100_000):
        cur["k"] = {}
        cur = cur["k"]
    out, copied = trip(deep_dict)
    depth = 0
    while out:
        out = out["k"]
        depth += 1
    assert copied and depth == 100_000


def test_corrupt_or_truncated_data_raises_never_crashes():
    value = {"a": [1, 2**70, "é", b"x", (1.5, None)], "b": {3, 4}, "c": [helpers.Holder(1)], "d": 1j}
    shared = [9]
    value["e"] = [shared, shared]
    data = _copy.dumps(value)
    assert data is not None
    for cut in range(len(data)):
        with pytest.raises((ValueError, EOFError, pickle.UnpicklingError)):
            _copy.loads(data[:cut] if cut else b"\xc7")
    # Flipped bytes in the records (not in the leaves: pickle does not claim to survive
    # that; a flipped memo index there asks for 40 GB).
    records = _copy.dumps({k: v for k, v in value.items() if k != "c"})
    assert records is not None and records[10:18] == bytes(8)  # no leaves
    rng = random.Random(1)
    for _ in range(3000):
        broken = bytearray(records)
        for _ in range(rng.randint(1, 3)):
            broken[rng.randrange(1, len(broken))] = rng.randrange(256)
        try:
            _copy.loads(bytes(broken))
        except Exception:  # noqa: BLE001 - any clean error: what matters is no crash
            pass
    plain = _copy.dumps([1, "two"])
    with pytest.raises(ValueError, match="a copied value is corrupt"):
        _copy.loads(plain + b"\x01")


def test_no_reference_is_leaked_or_lost():
    leaf = helpers.Holder("leaf")
    shared = ["shared"]
    text = "interned-not " * 2
    value = {"leaf": leaf, "shared": [shared, shared], "text": [text, text], "big": 2**100}
    data = _copy.dumps(value)
    before = [sys.getrefcount(obj) for obj in (leaf, shared, text)]
    for _ in range(200):
        _copy.dumps(value)
        out = _copy.loads(data)
    del out
    assert [sys.getrefcount(obj) for obj in (leaf, shared, text)] == before
    if hasattr(sys, "gettotalrefcount"):  # a debug build: every reference, not only these
        # A leak of one reference a trip grows the total by 100 in every round; caches
        # and other threads move it too, but not in every round.
        growth = []
        for _ in range(4):
            total = sys.gettotalrefcount()
            for _ in range(100):
                _copy.loads(_copy.dumps(value))
            growth.append(sys.gettotalrefcount() - total)
        assert min(growth) < 50, growth


def test_a_dict_changed_by_another_thread_while_it_is_sent_is_a_snapshot():
    """The walk holds the GIL and runs no Python code, so another thread of the sender
    cannot change a value in the middle of it: each copy is a snapshot, never a crash.
    (The walk's size checks, ``changed()`` in _copier.c, are a guard only.)"""
    d = {i: i for i in range(200)}
    stop = threading.Event()

    def mutate():
        i = 200
        while not stop.is_set():
            d[i] = i
            del d[i - 200]
            i += 1

    t = threading.Thread(target=mutate)
    t.start()
    try:
        for _ in range(300):
            out, copied = trip(d)
            assert copied and len(out) == 200 and all(k == v for k, v in out.items())
            assert sorted(out) == list(range(min(out), min(out) + 200))
    finally:
        stop.set()
        t.join()


class GcWalker:
    """A dict key whose __hash__ and __eq__ walk every object the collector tracks, and
    every list and tuple among them: run while the receiver fills its containers."""

    def __init__(self, n):
        self.n = n

    def _walk(self):
        import gc

        for obj in gc.get_objects():
            if type(obj) in (list, tuple):
                for item in obj:
                    type(item)

    def __hash__(self):
        self._walk()
        return self.n

    def __eq__(self, other):
        self._walk()
        return type(other) is GcWalker and other.n == self.n


def test_a_leaf_key_running_code_while_containers_fill_sees_no_empty_slot():
    value = [[i, (i, "x")] + [{GcWalker(i): i}] + [[j for j in range(5)]] for i in range(30)]
    out, copied = trip(value)
    assert copied and [row[0] for row in out] == list(range(30))
    assert all(list(row[2].values()) == [row[0]] for row in out)


def test_errors_and_fallbacks_leave_nothing_held():
    """A leaf whose pickle raises, and a fallback after a handle was pickled as a leaf:
    no native object is left (the suite's no_leaks fixture checks _native.live())."""
    with pytest.raises(I.NotShareableError):
        _transport.dumps([1, helpers.Unpicklable()])
    q = I.create_queue()
    inner = []
    t = (inner, q)
    inner.append(t)  # a cycle through a tuple: pickled whole, after q was a leaf
    tag, data, pins = _transport.dumps(t)
    try:
        out = _copy.loads(data)
        assert out[0][0] is out and out[1].id == q.id
    finally:
        from manygil._handles import release_pins

        release_pins(pins)
    leaf = helpers.Holder(1)
    before = sys.getrefcount(leaf)
    for _ in range(50):
        with pytest.raises(pickle.UnpicklingError):  # the leaves' pickle is cut short
            _copy.loads(_copy.dumps([leaf, "x" * 10])[:-3])
        with pytest.raises(ValueError):  # the records are
            _copy.loads(_copy.dumps(["x" * 10, [leaf]])[:30])
    assert sys.getrefcount(leaf) == before


def test_a_leaf_pickle_that_changes_the_tree_does_not_corrupt_the_copy():
    victim = [1, 2, 3]

    class Meddler:
        def __reduce__(self):
            victim.clear()  # after the walk: the copy has the list as it was
            return (dict, ())

    value = [victim, Meddler()]
    out, copied = trip(value)
    assert copied and out == [[1, 2, 3], {}]


PAYLOADS = {
    "ints": list(range(10_000)),
    "dict": {f"key{i}": i * 0.5 for i in range(1000)},
    "tuples": [(i, f"s{i}", i * 1.5) for i in range(1000)],
    "records": [{"id": i, "tags": [f"t{i}", "a", "b"], "score": i * 0.1} for i in range(200)],
    "mixed": [helpers.Holder(1), Color.RED, {"deep": helpers.make_deep(50_000)}],
}


def test_payloads_cross_a_pool_both_ways_by_the_copier():
    for name, value in PAYLOADS.items():
        assert _transport.dumps((helpers.echo, (value,), {}))[1][0] == _copy.MAGIC, name
    with InterpreterPoolExecutor(2) as pool:
        for name, value in PAYLOADS.items():
            out = pool.submit(helpers.echo, value).result(timeout=30)
            assert type(out) is type(value)
            if name == "mixed":
                assert out[:2] == value[:2] and helpers.depth_of(out[2]["deep"]) == 50_000
            else:
                assert out == value, name
        # A result made there, nested deeper than pickle can go.
        assert helpers.depth_of(pool.submit(helpers.make_deep, 100_000).result(timeout=30)) == 100_000
        assert list(pool.map(helpers.echo, [[i, {"i": i}] for i in range(20)])) == [[i, {"i": i}] for i in range(20)]


def test_interpreter_call_and_queue_carry_copies():
    interp = I.create()
    try:
        value = PAYLOADS["records"]
        assert _transport.dumps([value, {"shared": value}])[1][0] == _copy.MAGIC
        assert interp.call(helpers.echo, value) == value
        q = I.create_queue()
        q.put([value, {"shared": value}])
        out = q.get(timeout=10)
        assert out[0] == value and out[1]["shared"] is out[0]
    finally:
        interp.close()


def test_results_load_in_the_thread_that_asks_for_them():
    """A map's results, and the result of a task a caller already waits for, are loaded
    by that thread, not by the worker that delivered them (which goes back to work)."""
    me = threading.get_ident()
    with InterpreterPoolExecutor(2) as pool:
        assert set(pool.map(helpers.make_load_marker, range(6))) == {me}
        assert pool.submit(helpers.make_load_marker).result(timeout=30) == me
        # Not asked for yet: loaded as it arrives, on the worker's thread.
        future = pool.submit(helpers.make_load_marker)
        concurrent.futures.wait([future], timeout=30)
        assert future.result() != me


def test_a_result_that_does_not_load_is_the_error_of_its_future():
    with InterpreterPoolExecutor(1) as pool:
        with pytest.raises(LookupError, match="does not load here"):
            list(pool.map(helpers.make_load_fails, range(2)))
        future = pool.submit(helpers.make_load_fails)
        with pytest.raises(LookupError):
            future.result(timeout=30)
        assert isinstance(future.exception(), LookupError)
        future = pool.submit(helpers.make_load_fails)
        assert isinstance(future.exception(timeout=30), LookupError)
        with pytest.raises(LookupError):
            future.result()
