"""An environment check-up for per-interpreter GILs: what is set, what it means, the fix.

Examples:
    >>> from manygil.doctor import diagnose
    >>> any(f.name == "own GIL" for f in diagnose())
    True
"""

from __future__ import annotations

import os
import sys
import sysconfig

from . import _backend

__all__ = ("Finding", "diagnose")


class Finding:
    """One line of the report: ``verdict`` is "ok", "info", "warn" or "fail"."""

    __slots__ = ("fix", "name", "value", "verdict")

    def __init__(self, name: str, value: str, verdict: str, fix: str = "") -> None:
        self.name = name
        self.value = value
        self.verdict = verdict
        self.fix = fix

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "value": self.value, "verdict": self.verdict, "fix": self.fix}

    def __repr__(self) -> str:
        return f"Finding({self.name!r}, {self.value!r}, {self.verdict!r})"


def _allocator_name() -> str | None:
    try:
        import _testinternalcapi

        return str(_testinternalcapi.pymem_getallocatorsname())
    except (ImportError, AttributeError, RuntimeError):
        return None


def _bytecode_finding() -> Finding:
    """Whether worker interpreters load manygil's modules compiled, or compile them."""
    import importlib.util

    from . import _worker

    source = _worker.__file__
    try:
        cached = importlib.util.cache_from_source(source)
        fresh = os.stat(cached).st_mtime >= os.stat(source).st_mtime
    except (OSError, NotImplementedError, ValueError):
        fresh = False
    if fresh:
        return Finding("bytecode cache", "manygil's modules are compiled", "ok")
    if not sys.dont_write_bytecode:
        return Finding("bytecode cache", "written as manygil's modules are first imported", "ok")
    folder = os.path.dirname(source)
    return Finding("bytecode cache", "missing, and not written (PYTHONDONTWRITEBYTECODE or -B)", "warn",
                   f"every worker interpreter compiles manygil's modules as it starts (about 6 ms each); "
                   f"compile them once: {sys.executable} -m compileall -q {folder}")


def diagnose() -> list[Finding]:
    """Everything ``manygil doctor`` reports, as findings."""
    out: list[Finding] = []
    version = sys.version.split()[0]
    impl = sys.implementation.name
    if impl != "cpython" or sys.version_info < (3, 12):
        out.append(Finding("python", f"{impl} {version}", "fail", "use CPython 3.12 or newer (3.13 recommended)"))
    elif sys.version_info < (3, 13):
        out.append(Finding("python", f"CPython {version}", "warn",
                           "3.12 works but its interpreter API is thin, and a keyword call of some C "
                           "functions made first in an own-GIL interpreter crashes the process at exit "
                           "(see the limitations page); prefer 3.13"))
    else:
        out.append(Finding("python", f"CPython {version}", "ok"))

    debug = hasattr(sys, "gettotalrefcount")
    free_threaded = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
    build = ", ".join(b for b, on in (("debug", debug), ("free-threaded", free_threaded)) if on) or "release"
    if free_threaded:
        out.append(Finding("build", build, "info",
                           "a free-threaded build runs threads in parallel already: ThreadPoolExecutor "
                           "may be all you need; interpreters still isolate state"))
    elif debug:
        out.append(Finding("build", build, "warn", "a debug build is several times slower: benchmark on a release build"))
    else:
        out.append(Finding("build", build, "ok"))

    # In a subprocess: with some settings (tracemalloc on 3.12) creating one crashes.
    import subprocess

    probe = (
        "import sys\n"
        "if sys.version_info >= (3, 13):\n"
        "    import _interpreters as low; i = low.create(); low.destroy(i)\n"
        "else:\n"
        "    import _xxsubinterpreters as low; i = low.create(); low.destroy(i)\n"
        "print('created')\n"
    )
    try:
        proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
        ok = proc.returncode == 0 and "created" in proc.stdout
        detail = "" if ok else (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
    except (OSError, subprocess.TimeoutExpired) as exc:
        ok, detail = False, str(exc)
    if ok:
        out.append(Finding("own GIL", "interpreters with their own GIL can be created", "ok"))
    else:
        out.append(Finding("own GIL", f"cannot create one: {detail}", "fail",
                           "check that this is CPython 3.12+ built with subinterpreter support"))

    malloc = os.environ.get("PYTHONMALLOC", "")
    allocator = _allocator_name()
    if malloc:
        out.append(Finding("PYTHONMALLOC", malloc, "warn",
                           "a non-default allocator (or its debug hooks) is shared by every interpreter and "
                           "may not be safe or fast across GILs; unset PYTHONMALLOC"))
    else:
        out.append(Finding("PYTHONMALLOC", "not set", "ok"))
    if allocator is not None:
        default = allocator in ("pymalloc", "mimalloc")
        out.append(Finding("memory allocators", allocator, "ok" if default else "warn",
                           "" if default else "the allocators were replaced (PYTHONMALLOC, a debug build or "
                           "PyMem_SetAllocator); custom allocators must be thread-safe across GILs"))

    import tracemalloc

    try:
        _backend.check_tracemalloc()
        refused = ""
    except RuntimeError as exc:
        refused = str(exc)
    if refused:
        out.append(Finding("tracemalloc", "tracing", "fail", refused.replace("cannot create", "manygil refuses", 1)))
    elif tracemalloc.is_tracing():
        out.append(Finding("tracemalloc", "tracing", "warn",
                           "tracemalloc hooks the allocators and takes a process-wide lock on every allocation, "
                           "which serialises the interpreters; stop it (tracemalloc.stop(), no -X tracemalloc, "
                           "no PYTHONTRACEMALLOC) when measuring"))
    else:
        out.append(Finding("tracemalloc", "off", "ok"))

    out.append(_bytecode_finding())

    import faulthandler

    out.append(Finding("faulthandler", "enabled" if faulthandler.is_enabled() else "off", "info",
                       "faulthandler shows the threads of the main interpreter only; "
                       "manygil.dump_tracebacks() shows every interpreter manygil runs"))

    from importlib import metadata

    try:
        mine = metadata.version("manygil")
    except metadata.PackageNotFoundError:
        mine = "not installed (running from a checkout)"
    out.append(Finding("manygil", mine, "ok"))
    extras = []
    for dist, why in (("cloudpickle", "lambdas and closures as tasks"), ("tqdm", "map(progress=True)"),
                      ("numpy", "SharedArray.numpy() in the main interpreter"),
                      ("duckdb", "manygil.duckdb"), ("distributed", "manygil.dask")):
        try:
            extras.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            extras.append(f"{dist} missing ({why})")
    out.append(Finding("optional packages", "; ".join(extras), "info"))
    return out
