"""The invariant checks archzoo holds its own masks and models to, for your components.

A plug-in (your own mask builder, or a model config over your own MLP, norm or position) can
rely on the rest of archzoo as long as it keeps the invariants below. These functions check them
on tiny inputs against a slow, obvious reference, as archzoo's own tests do:

- :func:`check_mask`: a mask builder allows exactly what its predicate says, cell by cell (a
  double Python loop over query and key), in training and in the decode step; its tiles never
  let a fused kernel skip an allowed cell or drop the mask over a masked one; it survives
  ``jax.jit``. What the attention backends read of a mask (its dense cells, its tiles, its
  ``lower_triangular`` promise) is then what the predicate says, and a decode step against a KV
  cache sees the mask training saw.
- :func:`check_causal`: the logits at position t never depend on the tokens after t.
- :func:`check_packing`: examples packed in one row give the logits they give alone, so the
  packed loss is the sum of the examples' losses.
- :func:`check_cache`: decoding token by token with the KV cache gives the logits of one full
  forward pass, so :func:`archzoo.generate` continues text as the model scores it.

The model checks call a model as the loss and generation do (``forward`` on
``batch_inputs(batch)`` of a packed batch; ``generation_cache`` and ``decode_step``), so they
take any family or a subclass of one. Each check returns None, or raises ``AssertionError``
naming the invariant, where it broke (batch row; query and key, or token position) and by how
much (max |Δ| against the tolerance). Call them from your own pytest::

    import archzoo
    from archzoo import masks, testing

    def my_mask(q, k=None):
        return masks.causal(q, k) & masks.same_segment(q, k) & masks.sliding_window(4, q, k)

    def test_my_mask():
        testing.check_mask(my_mask, lambda q, k: (q.segment_ids == k.segment_ids)
                           & (k.positions <= q.positions) & (k.positions > q.positions - 4))

    def test_my_model():
        cfg = archzoo.load_model_config("my_model.yaml", d_model=32, num_layers=2)
        testing.check_causal(cfg)
        testing.check_packing(cfg)
        testing.check_cache(cfg)

Shapes: ``B`` batch, ``L`` length (``Q``/``K`` query/key), ``V`` vocab.
"""

from archzoo.testing.masks import check_mask
from archzoo.testing.models import check_cache, check_causal, check_packing

__all__ = ["check_cache", "check_causal", "check_mask", "check_packing"]
