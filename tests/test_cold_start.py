"""What a pool's first task waits for: a worker's imports and its bootstrap.

The times are ./dev bench's ("cold start to first result"); these tests check what the
start does and does not do.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import types

import pytest

from manygil import _interpreters, _transport

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(program: str, tmp_path: object, preload: bool = True) -> str:
    """Run ``program`` as a script file, or with ``-c`` (``preload=False``: no worker
    imports the script as it starts, whatever the threads' timing)."""
    if preload:
        script = os.path.join(str(tmp_path), "script.py")
        with open(script, "w") as f:
            f.write(textwrap.dedent(program))
        args = [sys.executable, script]
    else:
        args = [sys.executable, "-c", textwrap.dedent(program)]
    out = subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_a_worker_unpickles_without_functools(tmp_path: object):
    """_pickle's initialization imports functools for partial alone, and functools
    imports collections: the worker gives it _functools' class instead.  A task that
    imports functools gets the whole module, and partials cross both ways.  Nor does it
    import types (functools does: 3.12's workers have it).  The error
    paths' module (_excinfo) is imported by the first task that raises.  In a program of
    its own: under pytest, the time-limit plugin's stack dumps import more in workers;
    with ``-c``, since a worker that imported the script (when it is up before the first
    task) would have its imports."""
    out = _run(
        """
        import functools
        from manygil import InterpreterPoolExecutor

        if __name__ == "__main__":
            with InterpreterPoolExecutor(1) as pool:
                loaded = pool.submit(eval, "sorted(__import__('sys').modules)").result(timeout=60)
                print(" ".join(m for m in loaded if m in ("_pickle", "functools", "collections", "types", "manygil._excinfo")))
                try:
                    pool.submit(int, "x").result(timeout=60)
                except ValueError as exc:
                    assert "invalid literal" in str(exc)
                else:
                    raise AssertionError("no ValueError")
                assert pool.submit(functools.partial(pow, 2), 10).result(timeout=60) == 1024
                back = pool.submit(functools.partial, pow, 3).result(timeout=60)
                assert type(back) is functools.partial and back(2) == 9
                total = pool.submit(eval, "__import__('functools').reduce(int.__add__, [1, 2, 3])")
                assert total.result(timeout=60) == 6
        """,
        tmp_path,
        preload=False,
    )
    if sys.version_info < (3, 13):  # threading, imported there on purpose (a 3.12 bug), needs them
        assert out.split() == ["_pickle", "collections", "functools", "types"], out
    else:
        assert out.split() == ["_pickle"], out


def test_a_worker_imports_functools_when_it_was_loaded_first():
    """An interpreter that imported functools before manygil (code run in it through
    the interpreters API) keeps that module: only a fresh interpreter gets the stand-in."""
    from manygil import interpreters

    interp = interpreters.create()
    try:
        interp.exec("import functools; first = functools")
        interp.exec("import manygil._worker, functools; assert functools is first and functools.reduce")
    finally:
        interp.close()


def _load_fake_extension(monkeypatch: pytest.MonkeyPatch) -> str:
    """A package with an extension module loaded in this interpreter, for the test."""
    import _imp

    module = types.ModuleType("fakeext")
    module.__spec__ = types.SimpleNamespace(origin="/x/fakeext" + _imp.extension_suffixes()[0])  # type: ignore[assignment]
    monkeypatch.setitem(sys.modules, "fakeext", module)
    return "fakeext"


@pytest.fixture
def extension_loaded(monkeypatch: pytest.MonkeyPatch) -> str:
    """A package with an extension module loaded in this interpreter ("fakeext")."""
    return _load_fake_extension(monkeypatch)


# name: (script, what the worker imports first, whether that takes a parse)
SCRIPTS = {
    "nothing": ("import os\nprint(os.sep)\n", "", False),
    "plain": ("import fakeext\n", "fakeext", True),
    "listed": ("import os, fakeext as f\n", "fakeext", True),
    "from": ("from fakeext.sub import thing\n", "fakeext.sub", True),
    "semicolon": ("x = 1; import fakeext\n", "fakeext", True),
    "semicolon in brackets": ("x = (1,\n     2); import fakeext\n", "fakeext", True),
    "backslash": ("import os, \\\n    fakeext\n", "fakeext", True),
    "crlf": ("import os\r\nimport fakeext\r\n", "fakeext", True),
    "bom": ("\ufeffimport fakeext\n", "fakeext", True),
    "non-ascii": ("import os\nnom = 'é'; import fakeext\n", "fakeext", True),
    "joined twice": ("import os, \\\n    sys, \\\n    fakeext\n", "fakeext", True),
    "cr": ("import os\rimport fakeext\r", "fakeext", True),
    "in a function": ("def f():\n    import fakeext\n", "", False),
    "a longer name": ("import fakeextra\n", "", False),
    "an attribute": ("import os\nx = os.fakeext\n", "", False),
    "under if": ("if True:\n    import fakeext\n", "", False),
    "in try": ("try:\n    import fakeext\nexcept ImportError:\n    pass\n", "", False),
    "indented mention": ("def f():\n    return 'fakeext'\n", "", False),
    "bare manygil": ("import manygil\nfrom manygil import InterpreterPoolExecutor\n", "", False),
    "manygil submodule": ("import manygil.shared\n", "manygil.shared", True),
    # Names in comments and strings at the top level: a parse that finds nothing.
    "in a comment": ("import os  # fakeext\n", "", True),
    "in a docstring": ('"""Uses\nfakeext.run() to do it."""\nimport os\n', "", True),
}


@pytest.mark.parametrize("name", list(SCRIPTS))
def test_main_first_parses_only_scripts_that_may_import_an_extension(
    name: str, extension_loaded: str, tmp_path: object, monkeypatch: pytest.MonkeyPatch
):
    """What a worker imports before the caller's script (``_worker._refuse_early``) is
    the parse's answer, without the bare "manygil" that every worker has imported; and
    the parse (which imports ast on 3.13) is skipped for a script that has no top-level
    line that can import an extension package loaded here."""
    source, expected, parses = SCRIPTS[name]
    file = os.path.join(str(tmp_path), f"{name.replace(' ', '_')}.py")
    with open(file, "w", encoding="utf-8", newline="") as f:
        f.write(source)
    monkeypatch.setattr(_transport, "main_hint", lambda: ("", file))
    parse = _interpreters.main_extension_imports
    parsed: list[str] = []
    monkeypatch.setattr(_interpreters, "main_extension_imports", lambda: parsed.append(file) or parse())

    got = _interpreters._main_first(file)

    assert got == expected
    assert bool(parsed) == parses
    assert (got.split("\0") if got else []) == [n for n in parse().split("\0") if n and n != "manygil"]


def test_main_first_sees_an_extension_loaded_since_the_last_worker(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch
):
    """The answer is kept per script and per set of loaded packages: a pool made after
    the program imported one more extension package asks the parse again."""
    file = os.path.join(str(tmp_path), "later.py")
    with open(file, "w") as f:
        f.write("import fakeext\n")
    monkeypatch.setattr(_transport, "main_hint", lambda: ("", file))
    assert _interpreters._main_first(file) == ""
    _load_fake_extension(monkeypatch)
    assert _interpreters._main_first(file) == "fakeext"


def test_a_script_without_extension_imports_starts_its_pool_without_ast(tmp_path: object):
    """A pool started from a script whose top level imports no extension package
    starts its first worker without parsing the script: ast stays out of the process
    (3.14's concurrent.futures imports it anyway)."""
    out = _run(
        """
        import sys
        from manygil import InterpreterPoolExecutor

        if __name__ == "__main__":
            before = "ast" in sys.modules
            with InterpreterPoolExecutor(1) as pool:
                assert pool.submit(abs, -1).result(timeout=60) == 1
            print(before, "ast" in sys.modules)
        """,
        tmp_path,
    )
    before, after = out.split()
    assert after == before, out
    if sys.version_info < (3, 14):
        assert after == "False", out
