from __future__ import annotations

import pytest

duckdb = pytest.importorskip("duckdb", reason="duckdb has no wheel for this Python here")
pytest.importorskip("pyarrow", reason="pyarrow has no wheel for this Python here")

from manygil import InterpreterPoolExecutor
from manygil.duckdb import create_parallel_function

from . import helpers


@pytest.fixture(scope="module")
def pool():
    with InterpreterPoolExecutor(2) as p:
        yield p


@pytest.fixture
def con():
    c = duckdb.connect()
    yield c
    c.close()


pytestmark = pytest.mark.allow_leaks  # the module-scoped pool lives across tests


def test_integers_across_many_chunks_match_the_native_udf(con, pool):
    con.create_function("native_collatz", helpers.collatz_steps, ["BIGINT"], "BIGINT")
    with create_parallel_function(con, "par_collatz", helpers.collatz_steps, ["BIGINT"], "BIGINT", pool=pool):
        query = "select {f}(i) as v from range(10000) t(i) order by i"
        ours = con.sql(query.format(f="par_collatz")).fetchall()
        native = con.sql(query.format(f="native_collatz")).fetchall()
    assert ours == native
    assert ours[27] == (helpers.collatz_steps(27),)


@pytest.mark.parametrize(
    "fn,ptype,rtype,values",
    [
        (helpers.half, "DOUBLE", "DOUBLE", [1.0, 2.5, -3.0]),
        (helpers.half, "FLOAT", "DOUBLE", [1.0, 2.5]),
        (helpers.is_even, "INTEGER", "BOOLEAN", [1, 2, 3, 4]),
        (helpers.negate, "BOOLEAN", "BOOLEAN", [True, False, True]),
        (helpers.shout, "VARCHAR", "VARCHAR", ["a", "héllo", "日本", ""]),
        (helpers.add, "SMALLINT", "INTEGER", [1, -5]),
    ],
)
def test_types(con, pool, fn, ptype, rtype, values):
    con.execute(f"create table t (x {ptype})")
    con.executemany("insert into t values (?)", [[v] for v in values])
    with create_parallel_function(con, "f", fn, [ptype], rtype, pool=pool):
        got = [r[0] for r in con.sql("select f(x) from t").fetchall()]
    assert got == [fn(v) for v in values]


def test_null_handling_default_and_special(con, pool):
    con.execute("create table t (x bigint)")
    con.execute("insert into t values (1), (null), (3)")
    with create_parallel_function(con, "d", helpers.none_aware, ["BIGINT"], "BIGINT", pool=pool):
        assert [r[0] for r in con.sql("select d(x) from t").fetchall()] == [10, None, 30]
    with create_parallel_function(con, "s", helpers.none_aware, ["BIGINT"], "BIGINT", pool=pool,
                                  null_handling="special"):
        assert [r[0] for r in con.sql("select s(x) from t").fetchall()] == [10, -1, 30]


def test_two_arguments_with_strings_and_nulls(con, pool):
    con.execute("create table t (a varchar, b varchar)")
    con.execute("insert into t values ('x', 'y'), (null, 'z'), ('p', 'q')")
    with create_parallel_function(con, "cat", helpers.add, ["VARCHAR", "VARCHAR"], "VARCHAR", pool=pool):
        assert [r[0] for r in con.sql("select cat(a, b) from t").fetchall()] == ["xy", None, "pq"]


def test_exception_default_raises_with_the_remote_traceback(con, pool):
    with create_parallel_function(con, "f7", helpers.fails_on_seven, ["BIGINT"], "BIGINT", pool=pool):
        with pytest.raises(duckdb.Error) as info:
            con.sql("select f7(i) from range(1, 100) t(i)").fetchall()
    text = str(info.value)
    assert "ValueError: seven divides 7" in text and "fails_on_seven" in text


def test_exception_return_null(con, pool):
    with create_parallel_function(con, "f7", helpers.fails_on_seven, ["BIGINT"], "BIGINT", pool=pool,
                                  exception_handling="return_null"):
        got = [r[0] for r in con.sql("select f7(i) from range(1, 15) t(i)").fetchall()]
    assert got == [None if i % 7 == 0 else i for i in range(1, 15)]


def test_unsupported_types_and_options_are_refused(con, pool):
    with pytest.raises(TypeError, match="parameter 1 has type DATE"):
        create_parallel_function(con, "f", helpers.add, ["DATE"], "BIGINT", pool=pool)
    with pytest.raises(TypeError, match="return type has type BLOB"):
        create_parallel_function(con, "f", helpers.add, ["BIGINT"], "BLOB", pool=pool)
    with pytest.raises(ValueError, match="null_handling"):
        create_parallel_function(con, "f", helpers.add, ["BIGINT"], "BIGINT", pool=pool, null_handling="x")


def test_owns_its_pool_when_none_is_given(con):
    with create_parallel_function(con, "sq", helpers.add, ["BIGINT", "BIGINT"], "BIGINT", workers=1) as handle:
        assert con.sql("select sq(2, 3)").fetchall() == [(5,)]
        own = handle.pool
    with pytest.raises(RuntimeError, match="after shutdown"):
        own.submit(helpers.add, 1)
