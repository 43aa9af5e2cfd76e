"""The run config's size ladder (``size:``) and budgets derived per run (``budget.per_param``):
every family of one rung has the same non-embedding N, and a per-parameter budget is that many
tokens per parameter of the run's own model, spent exactly."""

import pytest

from archzoo.analysis.runs import load_run
from archzoo.config import ConfigError
from archzoo.models import count_params
from archzoo.models.ladder import SIZES
from archzoo.train.config import load_experiment, load_run_configs
from archzoo.train.loop import train

from tests.train.test_runs import config


def write(tmp_path, text: str):
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


def test_a_size_axis_gives_every_family_the_rungs_non_embedding_count(tmp_path):
    exp = write(tmp_path, """
objective: {name: prefix_lm}
model: {vocab_size: 1024, mlp: {activation: gelu_tanh}}
budget: {kind: target_tokens, per_param: 20}
axes:
  - size.name: [n100k, n500k]
  - model: {causal: {family: decoder}, prefix: {family: decoder, mask: prefix}, encdec: {family: encoder_decoder}}
""")
    runs = load_experiment(exp).runs
    assert [r.name for r in runs] == [f"{s}-{m}" for s in ("n100k", "n500k") for m in ("causal", "prefix", "encdec")]
    for run in runs:
        n = count_params(run.model)
        target = SIZES[run.size.name]
        assert abs(n.non_embedding - target) <= 0.02 * target, (run.name, n.non_embedding)
        assert run.budget.value == round(20 * n.non_embedding)  # each run's own N
        assert run.model.vocab_size == 1024 and run.model.mlp.activation == "gelu_tanh"
    assert runs[0].model.mask == "causal" and runs[1].model.mask == "prefix"


def test_budget_per_param_counts_total_params_when_asked(tmp_path):
    exp = write(tmp_path, "size: {non_embedding: 50000}\nbudget: {kind: tokens, per_param: 2.5, params: total}\n")
    run = load_run_configs(exp)[0]
    assert run.budget.value == round(2.5 * count_params(run.model).total)
    assert run.budget.kind == "tokens"


def test_a_per_param_budget_is_spent_exactly(tmp_path):
    # a tiny model: N = 23,328 non-embedding parameters; 0.02 target tokens each
    path = config(tmp_path, budget="{kind: target_tokens, per_param: 0.02}")
    cfg = load_run_configs(path)[0]
    expected = round(0.02 * count_params(cfg.model).non_embedding)
    assert cfg.budget.value == expected
    train(cfg)
    record = load_run(cfg.run_dir)
    assert record.summary["target_tokens"] == expected
    assert record.facts["budget"] == {"kind": "target_tokens", "value": expected}
    # the resolved config holds the value with its rule, and loads back to the same run
    again = load_run_configs(cfg.run_dir / "config.yaml")[0]
    assert again.budget == cfg.budget and again.model == cfg.model


@pytest.mark.parametrize(
    "budget, match",
    [
        ("{kind: steps, per_param: 20}", r"budget.per_param: derives a token budget"),
        ("{kind: target_tokens, per_param: 0}", r"budget.per_param: must be > 0"),
        ("{kind: target_tokens, per_param: 20, value: 1000}", r"budget.value: 1000 disagrees with budget.per_param=20"),
    ],
)
def test_bad_derived_budgets_name_the_key_and_line(tmp_path, budget, match):
    path = write(tmp_path, f"name: r\nbudget: {budget}\n")
    with pytest.raises(ConfigError, match=match) as e:
        load_run_configs(path)
    assert "exp.yaml, line 2" in str(e.value)


@pytest.mark.parametrize(
    "size, match",
    [
        ("{name: n1M}", r"size.name: .*'n1M'.*did you mean 'n1m'"),
        ("{non_embedding: 10}", r"size.non_embedding"),
        ("{name: n100k, head_dim: 24, width_multiple: 32}", r"size.head_dim"),
    ],
)
def test_a_size_the_ladder_cannot_build_names_the_key_and_line(tmp_path, size, match):
    path = write(tmp_path, f"name: r\nsize: {size}\n")
    with pytest.raises(ConfigError, match=match) as e:
        load_run_configs(path)
    assert "exp.yaml, line 2" in str(e.value)
