"""Transparent huge pages for the host memory that XLA's CPU runtime allocates.

XLA's CPU runtime allocates a step's temporaries as one block with ``malloc`` (450 MiB for the
benchmark model of ``archzoo bench train``; ``strace`` shows one ``mmap`` and one ``munmap`` of
it per step). glibc serves anything over 32 MiB with a fresh ``mmap``, so every step faults the
block in again, one 4 KiB page at a time, and the kernel zeroes each page. On the 2-core
benchmark machines that was about a quarter of a training step's time (``perf``: 26% of the
samples in the kernel, mostly the page-fault path).

glibc 2.35 and newer take the tunable ``glibc.malloc.hugetlb=1``. With it, ``malloc`` asks the
kernel for transparent huge pages (``madvise(MADV_HUGEPAGE)``) on what it maps, and a 2 MiB page
faults in at once. The tunable is read when the process starts, so it must be in the environment
before Python starts. The ``archzoo`` command re-executes itself once with it (:func:`reexec`).
Research code that imports archzoo can export it itself::

    export GLIBC_TUNABLES=glibc.malloc.hugetlb=1

It changes no number, only where the pages come from. Nothing is done where it would have no
effect: not Linux with glibc 2.35 or newer, huge pages set to ``never`` (or to ``always``, which
already gives them), or ``ARCHZOO_HUGE_PAGES=0`` in the environment.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

__all__ = ["TUNABLE", "state", "environ", "reexec"]

TUNABLE = "glibc.malloc.hugetlb=1"
_THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def _thp_mode() -> str | None:
    """The kernel's transparent-huge-page mode (``always``, ``madvise``, ``never``), or None."""
    try:
        text = _THP.read_text()
    except OSError:
        return None
    return text[text.index("[") + 1 : text.index("]")] if "[" in text else None


def _takes_effect() -> bool:
    """Whether the tunable changes anything here: Linux with glibc 2.35 or newer and the kernel's
    huge pages on ``madvise``."""
    name, version = platform.libc_ver()
    try:
        glibc = name == "glibc" and tuple(int(p) for p in version.split(".")[:2]) >= (2, 35)
    except ValueError:
        return False
    return glibc and sys.platform.startswith("linux") and _thp_mode() == "madvise"


def state(env=None) -> str:
    """What this process's host memory gets, in words (printed by ``archzoo bench``)."""
    env = os.environ if env is None else env
    if _thp_mode() == "always":
        return "transparent huge pages (the kernel's default here)"
    if TUNABLE in env.get("GLIBC_TUNABLES", "") and _takes_effect():
        return f"transparent huge pages ({TUNABLE})"
    return "4 KiB pages"


def environ(env=None) -> dict | None:
    """``env`` (default ``os.environ``) with the tunable added to ``GLIBC_TUNABLES``, or None where
    it is there already or would have no effect."""
    env = dict(os.environ if env is None else env)
    if env.get("ARCHZOO_HUGE_PAGES") == "0" or "glibc.malloc.hugetlb" in env.get("GLIBC_TUNABLES", "") or not _takes_effect():
        return None
    env["GLIBC_TUNABLES"] = ":".join(filter(None, [env.get("GLIBC_TUNABLES"), TUNABLE]))
    return env


def reexec() -> None:
    """Re-executes this process (same interpreter, same command line, same pid) with the tunable
    set, where it applies; returns where it does not or the exec fails. Call it first, before
    anything allocates."""
    env = environ()
    if env is None:
        return
    try:
        os.execve(sys.executable, sys.orig_argv, env)
    except OSError:
        return
