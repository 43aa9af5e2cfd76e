"""Fixtures shared by test modules."""

from __future__ import annotations

import os

import pytest

from archzoo import hostmem  # no jax: the flags below still come first

# Before jax starts (here and in every subprocess a test launches, which inherit the
# environment): compile without LLVM's optimisations. The tests' tiny models spend most of their
# time compiling; this cuts the suite's time by about a third, and every comparison a test makes
# is between computations compiled alike. Benchmarks (archzoo bench) run without it.
if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

# One persistent compilation cache for the test processes, the subprocesses they start and the
# next session: many tests train the same tiny models in other processes (runs, sweeps, faults,
# evaluation), and a step compiled once is read back instead of compiled again. A cached
# executable is the one the compiler would give, so no number changes. The key holds the
# computation, the flags and the jax version, so a change of code compiles afresh.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".jax-test-cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

# Huge pages for the host memory of the test workers (pytest-xdist starts them after this) and
# of the subprocesses tests start, as the archzoo command gives itself (archzoo.hostmem).
_huge = hostmem.environ()
if _huge is not None:
    os.environ["GLIBC_TUNABLES"] = _huge["GLIBC_TUNABLES"]


def pytest_collection_modifyitems(config, items):
    """The slow tests first (a stable sort keeps every other order): pytest-xdist then hands the
    long ones out while there is other work to share the cores with, and the workers finish
    together instead of one running a long test alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def trained_run_dirs(tmp_path_factory):
    """A decoder and an encoder-decoder trained 6 steps on a small corpus (checkpoints at steps
    4 and 6): run directories to evaluate, by family."""
    from archzoo.train.config import load_run_configs
    from archzoo.train.loop import train
    from tests.train.test_runs import config

    tmp = tmp_path_factory.mktemp("trained")
    out = {}
    for family in ("decoder", "encoder_decoder"):
        cfg = load_run_configs(config(tmp, name=family, family=family))[0]
        train(cfg)
        out[family] = cfg.run_dir
    return out
