"""Which extension modules load in an interpreter with its own GIL.

For each module, a fresh subprocess (so that a crash or a hang cannot stop the
survey) imports it in the main interpreter, then in a new interpreter with its own GIL,
then in one that shares the main GIL; each attempt has a time limit.  Results are
cached by module, version and Python.

Examples:
    >>> from manygil.check import check_modules
    >>> [r.own.status for r in check_modules(["_json"])]
    ['ok']

Statuses: ``ok``; ``refuses`` (the module declines interpreters with their own GIL:
single-phase init, or no ``Py_mod_multiple_interpreters`` support); ``import-error``
(it fails to import, with the error); ``crash`` (the process died, with the signal);
``hang`` (no answer within the time limit); ``skipped`` (it does not even import in
the main interpreter).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

__all__ = ("Attempt", "ModuleReport", "cache_path", "check_modules", "installed_extension_modules")

_PROBE = r"""
import json, os, sys
name, mode = sys.argv[1], sys.argv[2]
def report(status, detail=""):
    sys.stdout.write(json.dumps({"status": status, "detail": detail}) + "\n")
    sys.stdout.flush()
    os._exit(0)  # skip finalization: some modules crash there, after the answer
if mode == "main":
    try:
        __import__(name)
    except BaseException as exc:
        report("import-error", f"{type(exc).__name__}: {exc}")
    report("ok")
if sys.version_info >= (3, 13):
    import _interpreters as low
    interp = low.create(low.new_config("isolated" if mode == "own" else "legacy"))
    info = low.exec(interp, f"import {name}")
    failed = None if info is None else (info.type.__name__, info.msg)
else:
    import _xxsubinterpreters as low
    interp = low.create(isolated=(mode == "own"))
    try:
        low.run_string(interp, f"import {name}")
        failed = None
    except low.RunFailedError as exc:
        text = str(exc)
        kind, _, msg = text.partition(": ")
        failed = (kind.strip("<>'").replace("class '", "").rpartition(".")[2], msg)
if failed is None:
    report("ok")
kind, msg = failed
for phrase in ("does not support loading in subinterpreters", "not supported in subinterpreters"):
    if phrase in msg:
        line = next(l for l in msg.splitlines() if phrase in l)  # numpy wraps it in advice
        report("refuses", line.strip())
report("import-error", f"{kind}: {msg}")
"""


class Attempt:
    """One import attempt: ``status`` and, where it failed, ``detail``."""

    __slots__ = ("detail", "status")

    def __init__(self, status: str, detail: str = "") -> None:
        self.status = status
        self.detail = detail

    def as_dict(self) -> dict[str, str]:
        return {"status": self.status, "detail": self.detail}

    def __repr__(self) -> str:
        return f"Attempt({self.status!r}, {self.detail!r})"


class ModuleReport:
    """What ``check`` found for one module."""

    __slots__ = ("cached", "main", "module", "own", "shared", "version")

    def __init__(self, module: str, version: str, main: Attempt, own: Attempt, shared: Attempt, cached: bool) -> None:
        self.module = module
        self.version = version
        self.main = main
        self.own = own
        self.shared = shared
        self.cached = cached

    @property
    def ok(self) -> bool:
        """Whether the module loads in an interpreter with its own GIL."""
        return self.own.status == "ok"

    def as_dict(self) -> dict[str, object]:
        return {
            "module": self.module,
            "version": self.version,
            "python": _python_tag(),
            "main": self.main.as_dict(),
            "own_gil": self.own.as_dict(),
            "shared_gil": self.shared.as_dict(),
            "cached": self.cached,
        }

    def __repr__(self) -> str:
        return f"ModuleReport({self.module!r}, own={self.own.status}, shared={self.shared.status})"


def _python_tag() -> str:
    return f"{sys.implementation.cache_tag}-{sys.version.split()[0]}"


def cache_path() -> Path:
    """Where results are cached (``$MANYGIL_CACHE_DIR`` or ``~/.cache/manygil``)."""
    base = os.environ.get("MANYGIL_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "manygil"
    )
    return Path(base) / "check.json"


def _module_version(name: str) -> str:
    from importlib import metadata

    top = name.split(".")[0]
    if top in sys.stdlib_module_names or top in sys.builtin_module_names:
        return f"stdlib {sys.version.split()[0]}"
    try:
        dists = metadata.packages_distributions().get(top, [])
        if dists:
            return f"{dists[0]} {metadata.version(dists[0])}"
    except Exception:  # noqa: BLE001 - broken metadata must not stop the survey
        pass
    return "unknown"


def _attempt(name: str, mode: str, timeout: float, env: dict[str, str]) -> Attempt:
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _PROBE, name, mode],
            capture_output=True, text=True, timeout=timeout, env=env,
        )
    except subprocess.TimeoutExpired:
        return Attempt("hang", f"no answer within {timeout:g} s")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if lines:
        data = json.loads(lines[-1])
        return Attempt(data["status"], data["detail"])
    if proc.returncode < 0:  # POSIX: killed by a signal
        try:
            sig = signal.Signals(-proc.returncode).name
        except ValueError:  # one the enum does not name (a real-time signal)
            sig = f"signal {-proc.returncode}"
        return Attempt("crash", f"killed by {sig}")
    if proc.returncode >= 0xC0000000:  # Windows: an NTSTATUS error, 0xC0000005 an access violation
        return Attempt("crash", f"ended by Windows exception 0x{proc.returncode:08X}")
    tail = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
    return Attempt("crash", tail)


def _check_one(name: str, timeout: float, env: dict[str, str]) -> ModuleReport:
    version = _module_version(name)
    main = _attempt(name, "main", timeout, env)
    if main.status != "ok":
        skipped = Attempt("skipped", "does not import in the main interpreter")
        return ModuleReport(name, version, main, skipped, skipped, False)
    own = _attempt(name, "own", timeout, env)
    shared = _attempt(name, "shared", timeout, env)
    return ModuleReport(name, version, main, own, shared, False)


def _load_cache() -> dict[str, dict[str, object]]:
    try:
        return json.loads(cache_path().read_text())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return {}


def _save_cache(cache: dict[str, dict[str, object]]) -> None:
    path = cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".check-")
        with os.fdopen(fd, "w") as f:
            json.dump(cache, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except OSError:
        pass  # a cache that cannot be written is only slower


def _from_cache(entry: dict[str, object]) -> ModuleReport:
    def attempt(key: str) -> Attempt:
        d = entry[key]
        return Attempt(d["status"], d["detail"])  # type: ignore[index]

    return ModuleReport(str(entry["module"]), str(entry["version"]), attempt("main"),
                        attempt("own_gil"), attempt("shared_gil"), True)


def check_modules(
    names: Iterable[str],
    *,
    timeout: float = 30.0,
    path: Iterable[str] = (),
    use_cache: bool = True,
    jobs: int | None = None,
) -> list[ModuleReport]:
    """Try to import each module in an own-GIL and a shared-GIL interpreter.

    Args:
        names: module names.
        timeout: seconds each import attempt may take before it counts as a hang.
        path: directories to put in front of ``PYTHONPATH`` for the attempts.
        use_cache: reuse earlier results for the same module, version and Python.
        jobs: attempts run at once (default: the number of cores).

    Returns:
        One report per module, in the order given.
    """
    names = list(dict.fromkeys(names))
    env = dict(os.environ)
    extra = [str(p) for p in path]
    if extra:
        env["PYTHONPATH"] = os.pathsep.join(extra + [env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    cache = _load_cache() if use_cache else {}
    keys = {n: f"{_python_tag()}|{n}|{_module_version(n)}|{os.pathsep.join(extra)}" for n in names}
    todo = [n for n in names if keys[n] not in cache]
    with ThreadPoolExecutor(jobs or os.cpu_count() or 1) as pool:
        fresh = dict(zip(todo, pool.map(lambda n: _check_one(n, timeout, env), todo)))
    if use_cache and fresh:
        for n, report in fresh.items():
            if report.main.status != "hang":  # a hang may be the machine's fault: try again next time
                cache[keys[n]] = report.as_dict()
        _save_cache(cache)
    return [fresh[n] if n in fresh else _from_cache(cache[keys[n]]) for n in names]


def installed_extension_modules() -> list[str]:
    """Top-level modules of this environment that ship a compiled extension."""
    from importlib import metadata

    found: set[str] = set()
    suffixes = (".so", ".pyd")
    for dist in metadata.distributions():
        for file in dist.files or ():
            if not str(file).endswith(suffixes):
                continue
            parts = Path(str(file)).parts
            if not parts or parts[0].endswith((".data", ".libs")) or parts[0] == "..":
                continue
            top = parts[0].split(".")[0] if len(parts) == 1 else parts[0]
            if top.isidentifier():
                found.add(top)
    return sorted(found)
