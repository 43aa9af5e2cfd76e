"""The benchmark's peaks: the data-sheet lookup by device kind, and the measured matmul peak in
the model's dtype."""

from __future__ import annotations

import pytest

from archzoo.bench import DATA_SHEET_HALF_PEAKS, data_sheet_peak, matmul_peak_flops


@pytest.mark.parametrize(
    "kind, part",
    [
        ("NVIDIA H100 80GB HBM3", "H100"),
        ("NVIDIA H100 PCIe", "H100 PCIe"),
        ("NVIDIA H100 NVL", "H100 NVL"),
        ("NVIDIA H200", "H200"),
        ("NVIDIA A100-SXM4-80GB", "A100"),
        ("TPU v5 lite", "TPU v5 lite"),
        ("TPU v5", "TPU v5"),
        ("TPU v6 lite", "TPU v6 lite"),
    ],
)
def test_a_device_kind_finds_its_own_part_not_a_shorter_name_it_contains(kind, part):
    want = dict(DATA_SHEET_HALF_PEAKS)[part]
    assert data_sheet_peak(kind, "bfloat16") == want == data_sheet_peak(kind, "float16")


def test_float32_and_unknown_devices_have_no_data_sheet_peak():
    assert data_sheet_peak("NVIDIA H100 80GB HBM3", "float32") is None
    assert data_sheet_peak("cpu", "bfloat16") is None


def test_the_measured_peak_is_in_the_dtype_asked_for(monkeypatch):
    import jax
    import jax.numpy as jnp

    seen = []
    real = jax.jit

    def spy(f):
        def wrapped(a, b):
            seen.append((a.dtype, a.shape))
            return real(f)(a, b)

        return wrapped

    monkeypatch.setattr(jax, "jit", spy)
    assert matmul_peak_flops(n=64, repeats=1, dtype="bfloat16") > 0
    assert set(seen) == {(jnp.dtype(jnp.bfloat16), (64, 64))}
