from __future__ import annotations

import gc
import pickle

import pytest

from manygil import InterpreterPoolExecutor, _native
from manygil import interpreters as I
from manygil.shared import SharedArray, SharedBuffer, SharedValue

from . import helpers


def test_buffer_basics_and_bounds():
    buf = SharedBuffer(8)
    assert len(buf) == 8 and buf.nbytes == 8 and bytes(buf) == bytes(8)
    buf[0] = 255
    buf[1:4] = b"abc"
    assert bytes(buf[0:4]) == b"\xffabc"
    assert buf.read(1, 3) == b"abc"
    buf.write(5, b"xyz")
    assert bytes(buf)[5:] == b"xyz"
    with pytest.raises(IndexError):
        buf[8]
    with pytest.raises(IndexError, match=r"range \[6, 9\) is outside this SharedBuffer of 8 bytes"):
        buf.write(6, b"xyz")
    with pytest.raises(IndexError):
        buf.read(-1, 2)
    with pytest.raises(ValueError):
        buf[0:2] = b"abc"  # wrong length
    with pytest.raises(ValueError, match="non-negative int"):
        SharedBuffer(-1)
    assert bytes(SharedBuffer.from_bytes(b"hello")) == b"hello"


def test_readonly_view():
    buf = SharedBuffer.from_bytes(b"data")
    ro = buf.readonly_view()
    assert ro.readonly and bytes(ro) == b"data"
    with pytest.raises(TypeError):
        ro[0] = 1
    buf[0] = ord("D")
    assert bytes(ro) == b"Data"  # same memory


def test_release_refuses_while_views_are_alive_and_then_errors_clearly():
    buf = SharedBuffer(4)
    view = memoryview(buf)
    with pytest.raises(BufferError, match="still in use"):
        buf.release()
    view.release()
    buf.release()
    assert buf.released
    with pytest.raises(ValueError, match="released"):
        memoryview(buf)
    with pytest.raises(ValueError, match="released"):
        pickle.dumps(buf)


def test_crossing_is_by_id_and_costs_the_same_for_any_size():
    small = pickle.dumps(SharedBuffer(1024))  # holds no reference: nothing leaks
    big_buffer = SharedBuffer(64 * 2**20)
    big = pickle.dumps(big_buffer)
    assert len(big) == len(small) < 200
    back = pickle.loads(big)
    back[0] = 9
    assert big_buffer[0] == 9


def test_interpreters_write_disjoint_slices_in_parallel():
    n = 100_000
    arr = SharedArray(n, "int64")
    with InterpreterPoolExecutor(4) as pool:
        step = n // 4
        futures = [pool.submit(helpers.fill_slice, arr, k * step, (k + 1) * step, k + 1) for k in range(4)]
        assert sum(f.result(timeout=60) for f in futures) == n
    values = arr.tolist()
    assert all(values[i] == i // step + 1 for i in range(n))


def test_lock_protects_read_modify_write_from_four_interpreters():
    from manygil.sync import Lock

    buf = SharedBuffer(8)
    lock = Lock()
    with InterpreterPoolExecutor(4) as pool:
        futures = [pool.submit(helpers.locked_increments, buf, lock, 2000) for _ in range(4)]
        assert sum(f.result(timeout=60) for f in futures) == 8000
    import struct

    assert struct.unpack_from("q", buf, 0)[0] == 8000


def test_buffer_outlives_the_interpreter_that_made_it():
    interp = I.create()
    try:
        buf = interp.call(helpers.make_buffer, 1000, 7)
    finally:
        interp.close()
    gc.collect()
    assert bytes(buf) == bytes([7]) * 1000


def test_buffer_returned_from_a_pool_task_is_the_same_memory():
    with InterpreterPoolExecutor(1) as pool:
        buf = pool.submit(helpers.make_buffer, 64, 3).result(timeout=30)
    assert bytes(buf) == bytes([3]) * 64


def test_nothing_left_after_pool_shutdown_and_many_cycles():
    import resource

    before = _native.live()["blocks"]
    with InterpreterPoolExecutor(2) as pool:
        for _ in range(50):
            buf = SharedBuffer(4096)
            pool.submit(helpers.fill_slice, buf, 0, 10, 1).result(timeout=30)
    del buf
    gc.collect()
    assert _native.live()["blocks"] == before
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(10_000):
        b = SharedBuffer(65536)
        b[0] = 1
        del b
    assert _native.live()["blocks"] == before
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0
    assert grown_kib < 50_000, f"peak RSS grew by {grown_kib} KiB over 10,000 cycles of 64 KiB"


def test_shared_array_indexing_views_and_errors():
    a = SharedArray((2, 3), "float64")
    a[1, 2] = 2.5
    assert a[1, 2] == 2.5 and a.shape == (2, 3) and a.dtype == "float64" and a.nbytes == 48
    with pytest.raises(IndexError):
        a[2, 0]
    with pytest.raises(TypeError, match="1-D"):
        a[0:1]
    v = SharedArray(10, "i")
    part = v[2:5]
    part[0] = 42
    assert v[2] == 42 and len(part) == 3
    v[5:7] = [1, 2]
    assert v.tolist()[5:7] == [1, 2]
    with pytest.raises(ValueError, match="cannot assign 3 values"):
        v[0:2] = [1, 2, 3]
    with pytest.raises(ValueError, match="step 1"):
        v[::2]
    with pytest.raises(TypeError, match="unsupported dtype"):
        SharedArray(3, "complex128")
    with pytest.raises(ValueError, match="needs 80 bytes"):
        SharedArray(10, "d", buffer=SharedBuffer(16))
    with pytest.raises(ValueError, match="shape"):
        SharedArray((2, -1))
    copy = pickle.loads(pickle.dumps(v))
    copy[0] = 7
    assert v[0] == 7


def test_shared_array_numpy_when_available():
    numpy = pytest.importorskip("numpy")
    a = SharedArray((3, 4), "float64")
    arr = a.numpy()
    arr[:] = numpy.arange(12).reshape(3, 4)
    assert a[2, 3] == 11.0
    del arr


def test_shared_value_is_atomic_across_interpreters():
    value = SharedValue(0)
    with InterpreterPoolExecutor(4) as pool:
        futures = [pool.submit(helpers.value_increments, value, 5000) for _ in range(4)]
        assert sum(f.result(timeout=60) for f in futures) == 20_000
    assert value.value == 20_000
    assert value.compare_and_set(20_000, 1) and not value.compare_and_set(20_000, 2)
    value.value = 5
    assert value.add(-2) == 3


def test_shared_array_is_a_buffer():
    a = SharedArray((2, 3), "float64")
    a[1, 2] = 5.0
    with memoryview(a) as view:
        assert (view.shape, view.format, view[1, 2]) == ((2, 3), "d", 5.0)
        view[0, 0] = 7.0
    assert a[0, 0] == 7.0
    np = pytest.importorskip("numpy")
    assert np.asarray(a).shape == (2, 3) and np.frombuffer(a, dtype="float64")[5] == 5.0
