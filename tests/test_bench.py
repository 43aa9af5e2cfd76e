"""The benchmark's peaks: the data-sheet lookup by device kind, and the measured matmul peak in
the model's dtype; rows longer than a learned position table refused."""

from __future__ import annotations

from pathlib import Path

import jax
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


@pytest.mark.parametrize(
    "kind, want",
    [
        ("NVIDIA H200 NVL", 835e12),
        ("NVIDIA GH200 480GB", 989.4e12),
        ("TPU v5e", 197e12),
        ("TPU v5p", 459e12),
        ("TPU v4 lite", None),  # v4i: not v4's peak
        ("NVIDIA RTX A1000 Laptop GPU", None),  # not an A100
    ],
)
def test_parts_whose_names_contain_another_part_are_not_taken_for_it(kind, want):
    assert data_sheet_peak(kind, "bfloat16") == want


def test_float32_and_unknown_devices_have_no_data_sheet_peak():
    assert data_sheet_peak("NVIDIA H100 80GB HBM3", "float32") is None
    assert data_sheet_peak("cpu", "bfloat16") is None


def test_the_measured_peak_is_in_the_dtype_asked_for(monkeypatch):
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


def test_rows_longer_than_the_learned_position_table_are_refused_before_any_work(capsys):
    """Inside the compiled step a lookup past the table reads its last row instead of failing:
    the bench refuses the length first, naming it and the key to change (and takes it so set)."""
    from archzoo.cli import main

    model = str(Path(__file__).resolve().parents[1] / "configs" / "models" / "gpt2-small.yaml")
    assert main(["bench", "train", model, "--length", "2048", "--steps", "1"]) == 2
    err = capsys.readouterr()
    assert "--length 2048 needs 2048 learned positions but the model's position.max_len=1024" in err.err
    assert "--set position.max_len=2048" in err.err and "tokens/s" not in err.out  # nothing measured

    from archzoo.bench import check_model
    from archzoo.models import load_model_config

    check_model(load_model_config(model, ["position.max_len=2048"]), 2048)
    check_model(load_model_config(model, ["position.kind=rope"]), 4096)  # no table to run past


@pytest.mark.skipif(jax.default_backend() == "gpu", reason="cuDNN runs on a GPU")
def test_a_kernel_the_platform_lacks_is_refused_before_any_work(capsys):
    from archzoo.cli import main

    assert main(["bench", "train", "--steps", "1", "--set", "attention.backend=cudnn"]) == 2
    err = capsys.readouterr()
    assert f"attention.backend: cudnn needs an NVIDIA GPU, but JAX runs on {jax.default_backend()}" in err.err
    assert "tokens/s" not in err.out and "Traceback" not in err.err
