"""The ``manygil`` command: ``check``, ``doctor``, ``bench`` and ``run``."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

EXAMPLES = """\
examples:
  manygil check _json _decimal numpy     which modules load under an own GIL
  manygil check --installed              every installed module with a compiled extension
  manygil check --json orjson            the same, for machines
  manygil doctor                         Python build, allocators, tracemalloc, extras
  manygil bench --quick                  the benchmark (from a source checkout)
  manygil run -m flake8 -j 4 src         a program's process pools on interpreters
  manygil run --report script.py ARGS    ...and what ran where, at exit
"""

RUN_USAGE = """\
usage: manygil run [--report] script.py [ARGS ...]
       manygil run [--report] -m module [ARGS ...]

Run an unmodified program with its process pools (concurrent.futures.ProcessPoolExecutor,
multiprocessing.Pool and the Pool of every multiprocessing context, joblib's default
backend) on interpreters with their own GIL; what needs processes keeps them.

options:
  -h, --help  show this help message and exit
  --report    at exit, print to stderr what ran where (calls per function, interpreters
              or processes, and why)
  -m module   run a module as `python -m module` does
"""

_COLOURS = {"ok": "32", "refuses": "33", "warn": "33", "info": "36", "skipped": "90",
            "import-error": "31", "crash": "31;1", "hang": "31;1", "fail": "31;1"}


def _paint(text: str, status: str, tty: bool) -> str:
    code = _COLOURS.get(status)
    return f"\033[{code}m{text}\033[0m" if tty and code else text


def _table(rows: list[list[str]], statuses: list[list[str]], tty: bool) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for row, st in zip(rows, statuses):
        cells = [_paint(cell.ljust(w), s, tty) for cell, w, s in zip(row, widths, st)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def cmd_check(args: argparse.Namespace) -> int:
    from .check import check_modules, installed_extension_modules

    names = list(args.modules)
    if args.installed:
        names += installed_extension_modules()
    if not names:
        print("manygil check: name modules to check, or use --installed", file=sys.stderr)
        return 2
    reports = check_modules(names, timeout=args.timeout, use_cache=not args.no_cache)
    if args.json:
        print(json.dumps([r.as_dict() for r in reports], indent=2))
    else:
        tty = sys.stdout.isatty()
        rows = [["MODULE", "VERSION", "OWN GIL", "SHARED GIL", "DETAIL"]]
        statuses = [["", "", "", "", ""]]
        for r in reports:
            failed = r.own if r.own.status != "ok" else r.shared if r.shared.status != "ok" else r.main
            detail = failed.detail if failed.status not in ("ok", "skipped") else (r.main.detail if r.main.status != "ok" else "")
            rows.append([r.module, r.version, r.own.status, r.shared.status, detail[:100]])
            statuses.append(["", "", r.own.status, r.shared.status, ""])
        print(_table(rows, statuses, tty))
        missing = [r.module for r in reports if r.main.status != "ok" and "ModuleNotFoundError" in r.main.detail]
        broken = [r.module for r in reports if r.main.status != "ok" and r.module not in missing]
        bad = [r.module for r in reports if not r.ok and r.main.status == "ok"]
        if missing:
            print(f"\nnot installed here: {', '.join(missing)} (check the name, or install it)")
        if broken:
            print(f"\nfail to import even in the main interpreter: {', '.join(broken)} (see DETAIL)")
        if bad:
            print(f"\n{len(bad)} of {len(reports)} do not load under an own GIL ({', '.join(bad)}): "
                  "InterpreterPoolExecutor runs the tasks that need them in process workers "
                  "(fallback=\"process\", the default); fallback=\"shared-gil\" runs them under the "
                  "main GIL instead")
    return 0 if all(r.ok for r in reports) else 1


def cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import diagnose

    findings = diagnose()
    if args.json:
        print(json.dumps([f.as_dict() for f in findings], indent=2))
    else:
        tty = sys.stdout.isatty()
        rows = [[f.verdict.upper(), f.name, f.value] for f in findings]
        statuses = [[f.verdict, "", ""] for f in findings]
        for line, f in zip(_table(rows, statuses, tty).splitlines(), findings):
            print(line)
            if f.fix and f.verdict != "ok":
                print(f"       → {f.fix}")
    return 1 if any(f.verdict == "fail" for f in findings) else 0


def cmd_bench(args: argparse.Namespace) -> int:
    script = Path(__file__).resolve().parents[2] / "bench" / "run.py"
    if not script.exists():
        print("manygil bench: the benchmark lives in the source checkout (bench/run.py); "
              "clone the repository and run ./dev bench", file=sys.stderr)
        return 2
    return subprocess.call([sys.executable, str(script), *args.rest])


def cmd_run(argv: list[str]) -> int:
    """``run``: its own parsing, which stops at the script or ``-m module``, so that
    the program's arguments (``-j 2``, ``--help``) pass through untouched."""
    report = False
    rest = list(argv)
    while rest:
        arg = rest.pop(0)
        if arg in ("-h", "--help"):
            print(RUN_USAGE, end="")
            return 0
        if arg == "--report":
            report = True
        elif arg == "-m" or (arg.startswith("-m") and len(arg) > 2):
            target = arg[2:] or (rest.pop(0) if rest else "")
            if not target:
                break
            from ._run import run

            run(target, rest, module=True, report=report)
            return 0
        elif arg == "--":
            if rest:
                from ._run import run

                run(rest[0], rest[1:], report=report)
                return 0
            break
        elif arg.startswith("-"):
            print(RUN_USAGE, end="", file=sys.stderr)
            print(f"manygil run: unknown option {arg} (the program's options come after its name)",
                  file=sys.stderr)
            return 2
        else:
            from ._run import run

            run(arg, rest, report=report)
            return 0
    print(RUN_USAGE, end="", file=sys.stderr)
    print("manygil run: name a script or -m module to run", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    args_list = sys.argv[1:] if argv is None else argv
    if args_list[:1] == ["run"]:
        return cmd_run(args_list[1:])
    parser = argparse.ArgumentParser(
        prog="manygil", description="Many GILs, one process: diagnostics and benchmarks.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("check", help="which extension modules load under an own GIL",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("modules", nargs="*", help="module names")
    p.add_argument("--installed", action="store_true", help="every installed module with a compiled extension")
    p.add_argument("--json", action="store_true", help="JSON output")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per import attempt (default 30)")
    p.add_argument("--no-cache", action="store_true", help="ignore cached results")
    p.set_defaults(func=cmd_check)
    p = sub.add_parser("doctor", help="check the environment for per-interpreter GILs")
    p.add_argument("--json", action="store_true", help="JSON output")
    p.set_defaults(func=cmd_doctor)
    sub.add_parser("run", help="run a program with its process pools on interpreters (run --help)",
                   add_help=False)
    p = sub.add_parser("bench", help="run the benchmark (from a source checkout)")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="arguments for bench/run.py")
    p.set_defaults(func=cmd_bench)
    # argparse's REMAINDER does not take options that come first (bench --quick), so
    # what bench does not know goes to bench/run.py, and is an error anywhere else.
    args, extra = parser.parse_known_args(argv)
    if extra:
        if args.func is not cmd_bench:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.rest = extra + args.rest
    return int(args.func(args))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONIOENCODING", "utf-8")
    sys.exit(main())
