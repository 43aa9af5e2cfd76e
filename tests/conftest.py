"""Fixtures shared by test modules."""

from __future__ import annotations

import pytest


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
