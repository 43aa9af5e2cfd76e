"""Huge pages for host memory: the environment ``archzoo.hostmem`` builds, the ``archzoo``
command's re-execution with it, and its effect on what ``malloc`` maps (``/proc/self/smaps``)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from archzoo import hostmem

APPLIES = hostmem.environ({}) is not None  # Linux, glibc >= 2.35, huge pages on madvise

# Maps 64 MiB with malloc, touches it, prints the pid and the huge-page KiB backing that block.
PROBE = textwrap.dedent(
    """
    import ctypes, os, re
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    n = 64 << 20
    p = libc.malloc(n)
    ctypes.memset(p, 1, n)
    huge, inside = 0, False
    for line in open("/proc/self/smaps"):
        m = re.match(r"([0-9a-f]+)-([0-9a-f]+) ", line)
        if m:
            inside = int(m[1], 16) <= p < int(m[2], 16)
        elif line.startswith("AnonHugePages:") and inside:
            huge += int(line.split()[1])
    print(os.getpid(), huge, os.environ.get("GLIBC_TUNABLES") or "-")
    """
)


def _clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "ARCHZOO_HUGE_PAGES")}
    return {**env, **extra}


def test_environ_adds_the_tunable_and_keeps_the_users_own():
    if not APPLIES:
        assert hostmem.environ({}) is None
        pytest.skip("no effect on this machine (not Linux with glibc >= 2.35 and huge pages on madvise)")
    assert hostmem.environ({})["GLIBC_TUNABLES"] == hostmem.TUNABLE
    mine = hostmem.environ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2", "HOME": "/h"})
    assert mine["GLIBC_TUNABLES"] == f"glibc.malloc.arena_max=2:{hostmem.TUNABLE}" and mine["HOME"] == "/h"
    assert hostmem.environ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}) is None  # the user's choice stands
    assert hostmem.environ({"ARCHZOO_HUGE_PAGES": "0"}) is None


@pytest.mark.skipif(not APPLIES, reason="no effect on this machine (not Linux with glibc >= 2.35 and huge pages on madvise)")
def test_reexec_gives_malloc_huge_pages_in_the_same_process():
    def run(code, **env):
        out = subprocess.run([sys.executable, "-c", code], env=_clean_env(**env), capture_output=True, text=True, check=True)
        return out.stdout.split()

    _, huge, _ = run(PROBE)
    assert int(huge) == 0, "without the tunable, malloc's 64 MiB block should be in 4 KiB pages"
    starter = f"import os; print(os.getpid(), flush=True)\nfrom archzoo import hostmem\nhostmem.reexec()\n{PROBE}"
    # -c code runs again from its start when re-executed: the pid twice, then the probe's line
    first_pid, again_pid, pid, huge, tunables = run(starter)
    assert first_pid == again_pid == pid, "re-executed as the same process"
    assert tunables == hostmem.TUNABLE
    assert int(huge) >= 32 << 10, f"only {huge} KiB of the 64 MiB block in huge pages"
    out = run(starter, ARCHZOO_HUGE_PAGES="0")
    assert len(out) == 4 and int(out[2]) == 0, out  # the pid once: not re-executed


def test_state_names_the_pages():
    assert hostmem.state({}) in ("4 KiB pages", "transparent huge pages (the kernel's default here)")
    if APPLIES:
        assert hostmem.state({"GLIBC_TUNABLES": hostmem.TUNABLE}) == f"transparent huge pages ({hostmem.TUNABLE})"
