"""Masks the kernel-translation tests (cuDNN, splash) build alike: rows of segment ids and the
masks over them. Each test file names its default rows."""

from __future__ import annotations

import numpy as np

from archzoo import masks

PACKED = [[1, 1, 1, 2, 2, 2, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1], [1, 1, 2, 2, 2, 2, 2, 0]]
ONE_EXAMPLE = [[1] * 8, [2] * 8, [1] * 8]


def facts(seg, **kw):
    return masks.facts(np.array(seg), **kw)


def self_mask(*terms, seg, **kw):
    """The conjunction of ``terms`` (``("causal",)``, ``("window", w)``, ...) over one facts object
    of rows ``seg``."""
    f = facts(seg, **kw)
    out = None
    for term in terms:
        m = masks.sliding_window(term[1], f) if term[0] == "window" else getattr(masks, term[0])(f)
        out = m if out is None else out & m
    return out


def decode_step_mask(seg):
    """One query (slot 4) against a cache of rows ``seg``: causal and same segment."""
    cache = facts(seg)
    step = cache[:, 4:5]
    return masks.causal(step, cache) & masks.same_segment(step, cache)


def causal_or_full(seg):
    f = facts(seg)
    return masks.causal(f) | masks.full(f)
