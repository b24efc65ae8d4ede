"""``python -m manygil run``: every way a program names a process pool.

Each form is a small program, run as a subprocess with a time limit on its own and
under ``manygil run --report``: the same output, and the report says where its tasks ran
(interpreters, or processes and why).  The subclass policy is tested in-process too, on
fake classes, without touching the standard library's.
"""

from __future__ import annotations

import abc

import pytest

from manygil import _run

from .test_run import _both, _report, _script

POOL = """\
    {imports}

    def square(x):
        return x * x

    if __name__ == "__main__":
        with {make}(2) as pool:
            print(pool.map(square, range(6)), pool.apply(square, (7,)), sorted(pool.imap_unordered(square, [8, 9])))
            print(isinstance(pool, multiprocessing.pool.Pool), type(pool).__name__)
"""

EXECUTOR = """\
    {imports}

    def square(x):
        return x * x

    if __name__ == "__main__":
        with {make}(2) as ex:
            print(list(ex.map(square, range(6), chunksize=2)), ex.submit(square, 7).result())
            print(list(ex.map(square, [8, 9])))
            print(isinstance(ex, concurrent.futures.ProcessPoolExecutor),
                  isinstance(ex, concurrent.futures.process.ProcessPoolExecutor), type(ex).__name__)
"""

FORMS = {
    "from multiprocessing.pool import Pool": (POOL, "import multiprocessing.pool\nfrom multiprocessing.pool import Pool", "Pool"),
    "multiprocessing.pool as mpp; mpp.Pool": (POOL, "import multiprocessing\nimport multiprocessing.pool as mpp", "mpp.Pool"),
    "multiprocessing.Pool": (POOL, "import multiprocessing, multiprocessing.pool", "multiprocessing.Pool"),
    "from multiprocessing import Pool": (POOL, "import multiprocessing.pool\nfrom multiprocessing import Pool", "Pool"),
    "get_context('spawn').Pool": (
        POOL, "import multiprocessing, multiprocessing.pool", 'multiprocessing.get_context("spawn").Pool'),
    "from concurrent.futures.process import ProcessPoolExecutor": (
        EXECUTOR, "import concurrent.futures, concurrent.futures.process\n"
        "from concurrent.futures.process import ProcessPoolExecutor", "ProcessPoolExecutor"),
    "concurrent.futures.process.ProcessPoolExecutor": (
        EXECUTOR, "import concurrent.futures.process", "concurrent.futures.process.ProcessPoolExecutor"),
    # the package's lazy __getattr__, first reached here
    "concurrent.futures.ProcessPoolExecutor": (
        EXECUTOR, "import concurrent.futures", "concurrent.futures.ProcessPoolExecutor"),
    "from concurrent.futures import ProcessPoolExecutor": (
        EXECUTOR, "import concurrent.futures\nfrom concurrent.futures import ProcessPoolExecutor", "ProcessPoolExecutor"),
    "from concurrent.futures import *": (
        EXECUTOR, "import concurrent.futures\nfrom concurrent.futures import *", "ProcessPoolExecutor"),
}


@pytest.mark.parametrize("form", FORMS)
def test_every_way_of_naming_a_process_pool_is_served(tmp_path, form):
    program, imports, make = FORMS[form]
    source = program.format(imports=imports.replace("\n", "\n    "), make=make)
    plain, run = _both([_script(tmp_path, source)], tmp_path)
    assert run.returncode == plain.returncode == 0, run.stderr
    assert run.stdout == plain.stdout
    assert "True" in run.stdout and "False" not in run.stdout
    assert _report(run.stderr) == {"__main__.square": (9, 0)}
    kind = "ProcessPoolExecutor" if program is EXECUTOR else "multiprocessing.Pool"
    assert f"pools: 1 {kind} on interpreters\n" in run.stderr
    assert "manygil run: " not in run.stderr  # no notice: nothing kept processes


def test_a_subclass_that_keeps_to_the_public_api_is_served(tmp_path):
    script = _script(tmp_path, """\
        import multiprocessing.pool
        import threading
        from concurrent.futures import ProcessPoolExecutor

        def square(x):
            return x * x

        class Bounded(ProcessPoolExecutor):
            \"\"\"At most `limit` tasks queued: a common recipe.\"\"\"

            def __init__(self, max_workers=None, limit=3, **kwargs):
                super().__init__(max_workers, **kwargs)
                self._slots = threading.BoundedSemaphore(limit)

            def submit(self, fn, /, *args, **kwargs):
                self._slots.acquire()
                future = super().submit(fn, *args, **kwargs)
                future.add_done_callback(lambda _: self._slots.release())
                return future

        class Squares(multiprocessing.pool.Pool):
            def squares(self, n):
                return self.map(square, range(n))

        if __name__ == "__main__":
            with Bounded(2) as ex:
                print([f.result() for f in [ex.submit(square, i) for i in range(8)]], list(ex.map(square, [1, 2])))
                print(isinstance(ex, ProcessPoolExecutor), issubclass(Bounded, ProcessPoolExecutor), ex._max_workers)
            with Squares(2) as pool:
                print(pool.squares(5), pool._processes, isinstance(pool, multiprocessing.pool.Pool))
    """)
    plain, run = _both([script], tmp_path)
    assert run.returncode == plain.returncode == 0, run.stderr
    assert run.stdout == plain.stdout
    assert _report(run.stderr) == {"__main__.square": (8 + 2 + 5, 0)}
    assert ("pools: 1 ProcessPoolExecutor subclass __main__.Bounded on interpreters; "
            "1 multiprocessing.Pool subclass __main__.Squares on interpreters\n") in run.stderr


def test_a_subclass_that_uses_the_internals_keeps_processes_and_says_why(tmp_path):
    """The recipe for a pool whose workers may start processes (non-daemonic): it
    overrides ``Process``, which only the standard library's pool has."""
    script = _script(tmp_path, """\
        import concurrent.futures.process
        import multiprocessing
        import multiprocessing.pool

        def square(x):
            return x * x

        def daemonic(_):
            return multiprocessing.current_process().daemon

        class NoDaemonProcess(multiprocessing.Process):
            @property
            def daemon(self):
                return False

            @daemon.setter
            def daemon(self, value):
                pass

        class NestablePool(multiprocessing.pool.Pool):
            @staticmethod
            def Process(_, *args, **kwds):
                return NoDaemonProcess(*args, **kwds)

        class Counting(concurrent.futures.process.ProcessPoolExecutor):
            def workers(self):
                return len(self._processes)

        if __name__ == "__main__":
            with NestablePool(2) as pool:
                print(pool.map(daemonic, range(3)), pool.apply(square, (4,)), list(pool.imap(square, [5, 6])))
                print(isinstance(pool, multiprocessing.pool.Pool))
            with Counting(2) as ex:
                print(list(ex.map(square, range(4), chunksize=2)), ex.workers() > 0)
                print(isinstance(ex, concurrent.futures.ProcessPoolExecutor))
    """)
    plain, run = _both([script], tmp_path)
    assert run.returncode == plain.returncode == 0, run.stderr
    assert run.stdout == plain.stdout
    assert run.stdout.startswith("[False, False, False] 16 [25, 36]\nTrue\n")
    assert _report(run.stderr) == {"__main__.daemonic": (0, 3), "__main__.square": (0, 3 + 4)}
    said = ("manygil run: __main__.NestablePool, a subclass of multiprocessing.pool.Pool, keeps real processes: "
            "it overrides Process, which only the standard library's multiprocessing.pool.Pool has\n")
    assert said in run.stderr
    assert ("manygil run: __main__.Counting, a subclass of ProcessPoolExecutor, keeps real processes: "
            "its code reads _processes") in run.stderr
    assert ("1 ProcessPoolExecutor subclass __main__.Counting in processes; "
            "1 multiprocessing.pool.Pool subclass __main__.NestablePool in processes") in run.stderr
    assert "    __main__.daemonic: " + said.removeprefix("manygil run: ") in run.stderr


def test_thread_pools_stay_thread_pools(tmp_path):
    """``ThreadPool`` derives from ``multiprocessing.pool.Pool``: it still runs its tasks
    in threads of the program (they see its globals), and is still a Pool."""
    script = _script(tmp_path, """\
        import multiprocessing.dummy
        import multiprocessing.pool
        from multiprocessing.pool import Pool, ThreadPool

        seen = []

        def remember(x):
            seen.append(x)
            return x * x

        if __name__ == "__main__":
            with ThreadPool(2) as pool:
                print(pool.map(remember, range(4)), sorted(seen), type(pool).__name__)
                print(isinstance(pool, Pool), issubclass(ThreadPool, multiprocessing.pool.Pool))
            with multiprocessing.dummy.Pool(2) as pool:
                print(pool.apply(remember, (9,)), len(seen), isinstance(pool, Pool))
            print(isinstance(object(), Pool), issubclass(int, Pool))
    """)
    plain, run = _both([script], tmp_path)
    assert run.returncode == plain.returncode == 0, run.stderr
    assert run.stdout == plain.stdout == "[0, 1, 4, 9] [0, 1, 2, 3] ThreadPool\nTrue True\n81 5 True\nFalse False\n"
    assert "no task was sent to a pool" in run.stderr


ENDS = """\
    import concurrent.futures.process
    import multiprocessing.pool
    import sys

    def square(x):
        return x * x

    def fail(x):
        raise ValueError(f"bad {x}")

    if __name__ == "__main__":
        ex = concurrent.futures.process.ProcessPoolExecutor(2)
        pool = multiprocessing.pool.Pool(2)
        print([f.result() for f in [ex.submit(square, i) for i in range(4)]], pool.map(square, range(4)))
        try:
            ex.submit(fail, 1).result()
        except ValueError as exc:
            print("caught", type(exc).__name__, exc)
        print(pool.apply_async(fail, (2,)).wait(60))
        left = [ex.submit(square, i) for i in range(3)], pool.map_async(square, range(3))
        if sys.argv[1:] == ["raise"]:
            print(pool.map(fail, [3]))
        print("end")  # without close(), join() or shutdown()
"""


@pytest.mark.parametrize("ending", ["end", "raise"])
def test_a_program_that_ends_without_shutdown_or_on_a_task_error(tmp_path, ending):
    plain, run = _both([_script(tmp_path, ENDS), ending], tmp_path)
    assert run.returncode == plain.returncode == (0 if ending == "end" else 1), run.stderr
    assert run.stdout == plain.stdout
    if ending == "raise":
        assert plain.stderr.splitlines()[-1] == "ValueError: bad 3"
        assert run.stderr.split("manygil run --report")[0].splitlines()[-1] == "ValueError: bad 3"
    assert _report(run.stderr) == {"__main__.square": (4 + 4 + 3 + 3, 0), "__main__.fail": (2 if ending == "end" else 3, 0)}


# -- the subclass policy, on fake classes ---------------------------------------------


class Original:
    """A stand-in for the standard library's class."""

    hook = None

    def __init__(self):
        self._workers = []

    def submit(self, fn):
        return fn()

    def _spawn(self):
        self._workers.append(1)


class Kept(Original):
    pass


class Served(Original, metaclass=_run._Swapped):
    def submit(self, fn):
        return ("served", fn())


_run._swap(Served, Original, Kept, ("submit",), "Fake")


def test_the_served_class_answers_isinstance_as_the_original():
    assert isinstance(Original(), Served) and isinstance(Kept(), Served) and isinstance(Served(), Served)
    assert issubclass(Original, Served) and issubclass(Kept, Served) and not issubclass(int, Served)
    assert not isinstance(object(), Served)
    assert (Served.__module__, Served.__qualname__) == (Original.__module__, Original.__qualname__)


def test_a_subclass_is_served_unless_it_touches_the_internals():
    class Public(Served):
        def submit(self, fn):
            return super().submit(fn)

        def twice(self, fn):
            self._mine = 1  # its own private attribute is its own business
            return self.submit(fn), self.submit(fn)

    class Overrides(Served):
        hook = 3

    class Reads(Served):
        def count(self):
            return len(self._workers)

    class Deeper(Public):
        pass

    assert Served in Public.__mro__ and type(Public) is _run._Swapped
    assert Public().twice(lambda: 1) == (("served", 1), ("served", 1))
    assert Served in Deeper.__mro__
    assert not isinstance(Public(), Deeper) and isinstance(Deeper(), Public)
    for cls, why in [(Overrides, "it overrides hook"), (Reads, "its code reads _workers")]:
        assert cls.__mro__[1] is Kept and type(cls) is type
        assert Served not in cls.__mro__ and isinstance(cls(), Served) and issubclass(cls, Served)
        assert cls._mg_kept_why == (f"{__name__}.{cls.__qualname__}, a subclass of Fake, keeps real processes: "
                                    f"{why}, which only the standard library's Fake has")
    assert Reads().submit(lambda: 2) == 2


def test_a_subclass_may_mix_in_an_abc():
    class Interface(abc.ABC):
        @abc.abstractmethod
        def name(self): ...

    class Public(Served, Interface):
        def name(self):
            return "public"

    class Reads(Served, Interface):
        def name(self):
            return str(self._workers)

    assert Served in Public.__mro__ and Public().name() == "public" and isinstance(Public(), Interface)
    assert Reads.__mro__[1] is Kept and type(Reads) is abc.ABCMeta and Reads().name() == "[]"
    with pytest.raises(TypeError, match="abstract"):
        type("Unfinished", (Served, Interface), {})()


def test_manygils_own_subclasses_get_the_original():
    namespace = {"__module__": "manygil._cpython", "__qualname__": "Slot", "_spawn": lambda self: None}
    slot = _run._Swapped("Slot", (Served,), namespace)
    assert slot.__mro__[1] is Original and not hasattr(slot, "_mg_kept_why")
