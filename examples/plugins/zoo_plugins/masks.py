"""Chunked attention: a query sees the keys of its own chunk of ``size`` positions only.

``chunked`` is a predicate over query and key facts (the form archzoo wraps with
``archzoo.masks.predicate``); ``chunked_causal`` composes it with the built-in causal mask, so
a decoder may use it (a decoder's mask must not show a token the ones after it).
"""

from archzoo import masks


def chunked(q, k, size: int = 4):
    """Query and key fall in the same chunk of ``size`` positions."""
    return q.positions // size == k.positions // size


def chunked_causal(q, k=None, size: int = 4):
    """Causal attention inside chunks of ``size`` positions (local attention without overlap)."""
    return masks.predicate(chunked, name="chunked", size=size)(q, k) & masks.causal(q, k)
