"""Writes a pyconfig.h for a macOS build check of the native module (./dev platform-check).

CPython's headers for macOS are not on this Linux machine, only its own build's:
Include/ (the same on every platform) and a pyconfig.h made by ./configure for Linux.
This takes that pyconfig.h and keeps what holds on macOS too: 64-bit sizes (LP64 on
both x86_64 and aarch64 macOS), the version's settings.  It removes the Linux
feature-test macros (_GNU_SOURCE, _POSIX_C_SOURCE, _XOPEN_SOURCE ..., which on macOS
would hide pthread_cond_timedwait_relative_np and sysctlbyname), and the HAVE_ macros of
Linux-only headers, and defines _DARWIN_C_SOURCE as CPython's macOS build does.

Limits: a syntax and type check, not a build.  HAVE_ macros of functions that macOS
lacks but no header of CPython's uses stay (they change nothing the check sees); what a
real macOS pyconfig.h enables beyond Linux's (framework builds, universal binaries) is
not checked.  A macOS runner in CI (.github/workflows) is the real test.

Usage: python tools/macos_pyconfig.py LINUX_PYCONFIG_H OUT_DIR
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

FEATURE_MACROS = {
    "_GNU_SOURCE",
    "_POSIX_C_SOURCE",
    "_XOPEN_SOURCE",
    "_XOPEN_SOURCE_EXTENDED",
    "__BSD_VISIBLE",
    "_NETBSD_SOURCE",
    "_BSD_SOURCE",
    "_DEFAULT_SOURCE",
    "_DARWIN_C_SOURCE",
    "_POSIX_THREADS",
}
LINUX_ONLY = re.compile(r"HAVE_(LINUX_|SYS_EPOLL|SYS_SYSMACROS|SYS_MEMFD|SYS_AUXV|SYS_PIDFD|SYS_EVENTFD|SYS_TIMERFD|NETPACKET|ASM_TYPES|MEMFD|PTHREAD_GETCPUCLOCKID|SEM_CLOCKWAIT|PTHREAD_COND_TIMEDWAIT_MONOTONIC|GETRANDOM|BLUETOOTH)")
DEFINE = re.compile(r"\s*#\s*(define|undef)\s+(\w+)")


def shim(text: str) -> str:
    kept = []
    for line in text.splitlines():
        m = DEFINE.match(line)
        if m and (m.group(2) in FEATURE_MACROS or LINUX_ONLY.match(m.group(2))):
            kept.append("/* macOS shim: dropped: " + line.strip() + " */")
            continue
        kept.append(line)
    head = (
        "/* pyconfig.h for a macOS syntax check, made by tools/macos_pyconfig.py from this\n"
        " * machine's Linux one (see its docstring for the limits). */\n"
        "#ifndef __APPLE__\n#error \"this pyconfig.h is for a macOS target\"\n#endif\n"
        "#define _DARWIN_C_SOURCE 1\n"
    )
    return head + "\n".join(kept) + "\n"


def main() -> int:
    src, out = Path(sys.argv[1]), Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    (out / "pyconfig.h").write_text(shim(src.read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
