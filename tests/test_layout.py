"""The package's import direction (DESIGN.md §10), checked in fresh interpreters."""

import json
import subprocess
import sys

import pytest


def modules_after(statement: str) -> set[str]:
    code = f"import sys, json\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return set(json.loads(out.splitlines()[-1]))


def test_a_mask_import_loads_no_other_archzoo_module_and_no_flax():
    loaded = modules_after("import archzoo.masks")
    assert {m for m in loaded if m.startswith("archzoo")} == {"archzoo", "archzoo.masks"}
    assert "flax" not in loaded


@pytest.mark.parametrize("module", ["archzoo.models", "archzoo.layers", "archzoo.masks"])
def test_models_layers_and_masks_never_import_data_train_or_cli(module):
    loaded = modules_after(f"import {module}")
    above = {m for m in loaded if m.split(".")[:2] in (["archzoo", "data"], ["archzoo", "train"], ["archzoo", "cli"])}
    assert not above, above


def test_the_top_level_names_are_the_objects_their_modules_define():
    import importlib

    import archzoo

    for name in archzoo.__all__:
        if name in archzoo._SUBMODULES:
            assert getattr(archzoo, name) is importlib.import_module(f"archzoo.{name}")
        else:
            assert getattr(archzoo, name) is getattr(importlib.import_module(archzoo._EXPORTS[name]), name), name


@pytest.mark.parametrize("module", ["archzoo.analysis.runs", "archzoo.analysis.table"])
def test_analysis_reads_run_directories_without_the_training_code(module):
    loaded = modules_after(f"import {module}")
    assert not {m for m in loaded if m.startswith("archzoo.train")}
    assert "jax" not in loaded, "reading a run directory needs no JAX"


def test_every_shipped_experiment_loads():
    from pathlib import Path

    from archzoo.train.config import load_run_configs

    experiments = sorted((Path(__file__).resolve().parents[1] / "experiments").glob("*.yaml"))
    assert experiments
    for path in experiments:
        assert load_run_configs(path), path
