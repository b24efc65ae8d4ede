#!/usr/bin/env bash
# The platform layer's checks (./dev platform-check; .ci/run runs it):
#   1. tests/c/test_platform.c, plain C, built with gcc and run here: the Linux branch,
#      and again with -DMG_SEM_GENERIC (the semaphore macOS and Windows use);
#   2. the same tests cross-compiled for Windows (mingw-w64) and run under Wine;
#   3. a macOS build check: every native source compiled for aarch64-macos and
#      x86_64-macos with zig cc (PyPI's ziglang, in .venv/zig), -Wall -Werror, against
#      PYTHON's headers and a macOS pyconfig.h made from its Linux one
#      (tools/macos_pyconfig.py says what that shim cannot catch); the tests are
#      compiled and linked for both too (run only on a real Mac).
# Missing tools are installed (Debian's gcc-mingw-w64-x86-64 and wine64 with apt-get,
# as root; ziglang with pip); where that cannot be done the step is skipped and says
# so, and MANYGIL_PLATFORM_STRICT=1 makes a skip a failure.  About 15 s once installed.
# Usage: tools/platform_check.sh PYTHON   (a CPython 3.12+ of this machine)
set -euo pipefail
cd "$(dirname "$0")/.."
py="${1:?usage: tools/platform_check.sh PYTHON}"
out=build/platform-check
mkdir -p "$out"
status=0
src=(tests/c/test_platform.c src/manygil/mg_platform.c)
flags=(-std=c11 -O2 -Wall -Wextra -Werror -Isrc/manygil)

skip() {  # skip MESSAGE
  echo "manygil: platform-check: SKIPPED: $*" >&2
  [ -z "${MANYGIL_PLATFORM_STRICT:-}" ] || status=1
}

run_tests() {  # run_tests NAME COMMAND...: the TAP output, failures and the summary shown
  local name="$1" rc=0; shift
  # coreutils' timeout bounds a hang; macOS has none (Homebrew's coreutils: gtimeout).
  local bound=()
  if command -v timeout >/dev/null 2>&1; then bound=(timeout 300)
  elif command -v gtimeout >/dev/null 2>&1; then bound=(gtimeout 300)
  fi
  ${bound[@]+"${bound[@]}"} "$@" > "$out/$name.log" 2>&1 || rc=$?
  grep -v '^ok ' "$out/$name.log" || true
  if [ "$rc" != 0 ]; then
    echo "manygil: platform-check: $name failed (exit $rc; $out/$name.log)" >&2
    status=1
  fi
}

apt_install() {  # apt_install PACKAGE...: as root, with Debian's apt-get; 1 if it cannot
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 || return 1
  echo "manygil: platform-check: installing $*" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null 2>&1 && return 0
  apt-get update -q >/dev/null 2>&1 || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null 2>&1
}

# 1. Linux, natively (on a Mac, its own branch: the host's cc, whatever uname says).
for variant in posix generic; do
  echo "=== $(uname -s) (gcc), $variant semaphore"
  extra=(); [ "$variant" = generic ] && extra=(-DMG_SEM_GENERIC)
  gcc "${flags[@]}" -pthread ${extra[@]+"${extra[@]}"} "${src[@]}" -o "$out/test_platform-linux-$variant" -lm
  run_tests "linux-$variant" "$out/test_platform-linux-$variant"
done

# 2. Windows: mingw-w64, then Wine.
echo "=== Windows (x86_64-w64-mingw32-gcc, run under Wine)"
wine=""
for w in wine64 /usr/lib/wine/wine64 wine; do
  if command -v "$w" >/dev/null 2>&1; then wine="$(command -v "$w")"; break; fi
done
if ! command -v x86_64-w64-mingw32-gcc >/dev/null 2>&1 || [ -z "$wine" ]; then
  apt_install gcc-mingw-w64-x86-64 wine64 || true
  wine="$(command -v wine64 || { [ -x /usr/lib/wine/wine64 ] && echo /usr/lib/wine/wine64; } || command -v wine || true)"
fi
if ! command -v x86_64-w64-mingw32-gcc >/dev/null 2>&1; then
  skip "no x86_64-w64-mingw32-gcc (Debian: apt-get install gcc-mingw-w64-x86-64)"
elif [ -z "$wine" ]; then
  skip "no Wine (Debian: apt-get install wine64)"
else
  x86_64-w64-mingw32-gcc "${flags[@]}" -static "${src[@]}" -o "$out/test_platform.exe"
  # A prefix of our own (made at the first run, ~10 s); no Mono or Gecko installer.
  # Wine makes the prefix itself, but not its parent (a fresh clone has no .venv yet).
  mkdir -p .venv/wine
  WINEPREFIX="$(pwd -P)/.venv/wine/prefix" WINEDEBUG=-all WINEDLLOVERRIDES="mscoree,mshtml=" \
    run_tests windows "$wine" "$out/test_platform.exe"
fi

# 3. macOS: zig cc for both architectures.
echo "=== macOS build check (zig cc, aarch64-macos and x86_64-macos, -Wall -Werror)"
zpy=.venv/zig/bin/python
if [ ! -x "$zpy" ] || ! "$zpy" -m ziglang version >/dev/null 2>&1; then
  "$py" -m venv .venv/zig && "$zpy" -m pip install -q --disable-pip-version-check 'ziglang==0.17.1' >&2 || true
fi
if ! "$zpy" -m ziglang version >/dev/null 2>&1; then
  skip "ziglang could not be installed into .venv/zig (pip install ziglang)"
else
  include="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
  config_h="$("$py" -c 'import sysconfig; print(sysconfig.get_config_h_filename())')"
  "$py" tools/macos_pyconfig.py "$config_h" "$out/macos-include"
  export ZIG_GLOBAL_CACHE_DIR="$(pwd -P)/.venv/zig/cache" ZIG_LOCAL_CACHE_DIR="$(pwd -P)/.venv/zig/cache"
  mkdir -p "$out/macos"
  n=0; bad=0
  for target in aarch64-macos x86_64-macos; do
    # -c (an object each), not -fsyntax-only: zig 0.17 then fails to rename the
    # object it did not write.  Code generation for the target is checked too.
    for f in src/manygil/_native_*.c src/manygil/_copier.c src/manygil/mg_platform.c; do
      if "$zpy" -m ziglang cc -target "$target" -std=c11 -O2 -Wall -Werror \
           -I"$out/macos-include" -I"$include" -c "$f" -o "$out/macos/$(basename "$f" .c)-$target.o"; then
        n=$((n + 1))
      else
        echo "manygil: platform-check: $f does not compile for $target" >&2; bad=$((bad + 1))
      fi
    done
    if "$zpy" -m ziglang cc -target "$target" "${flags[@]}" "${src[@]}" -o "$out/macos/test_platform-$target"; then
      n=$((n + 1))
    else
      echo "manygil: platform-check: the platform tests do not build for $target" >&2; bad=$((bad + 1))
    fi
  done
  echo "$n builds for macOS clean, $bad failing (CPython $("$py" -c 'import platform; print(platform.python_version())')'s headers)"
  [ "$bad" = 0 ] || status=1
fi
exit $status
