"""The README's "Use in your own code" snippets run as written, so they stay true."""

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_snippets() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Use in your own code", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_readme_snippets_run(capsys):
    snippets = readme_snippets()
    assert len(snippets) >= 3
    namespace: dict = {}
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        for code in snippets:
            exec(compile(code, "README.md", "exec"), namespace)
    finally:
        os.chdir(cwd)
    printed = capsys.readouterr().out
    # the packed causal mask printed by the snippet: block-diagonal lower triangles
    assert "[1 1 0 0 0 0]" in printed and "[0 0 0 1 1 0]" in printed


def test_bring_your_own_component_snippets_run(capsys):
    """The plug-in section's snippets run as written, its checks pass on the example mask, and its
    YAML is a model and objective config archzoo reads."""
    import sys

    import yaml

    from archzoo.config import from_dict
    from archzoo.objectives import ObjectiveConfig

    text = (ROOT / "README.md").read_text()
    section = text.split("## Bring your own component", 1)[1].split("\n## ", 1)[0]
    snippets = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(snippets) == 2
    cwd, path = os.getcwd(), list(sys.path)
    os.chdir(ROOT)
    try:
        namespace: dict = {}
        for code in snippets:
            exec(compile(code, "README.md", "exec"), namespace)
        # chunks of 2, causal, packed: [1 1 | 1 1] then the second example alone
        assert "[0 0 1 0 0 0]" in capsys.readouterr().out
        assert namespace["out"].tokens.shape == (1, 4)
        (config,) = [yaml.safe_load(y) for y in re.findall(r"```yaml\n(.*?)```", section, flags=re.S)]
        archzoo_model = namespace["archzoo"].load_model_config(config["model"])
        assert str(archzoo_model.mlp.kind) == "zoo_plugins.layers:ReGLU"
        assert from_dict(ObjectiveConfig, config["objective"]).label == "zoo_plugins.objectives:reverse_lm"
    finally:
        os.chdir(cwd)
        sys.path[:] = path
