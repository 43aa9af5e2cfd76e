"""Mixture-of-Experts converters (Mixtral, OLMoE, Qwen2-MoE, Switch Transformer) against
transformers.

Each case builds a tiny random transformers model (fp32, eager attention and eager experts,
eval mode; norm scales and biases randomised so a swapped tensor shows; router weights of std
``ROUTER_STD`` so that no token's k-th and (k+1)-th router logits are close enough for
float differences to swap its experts, which each test checks), saves it with
``save_pretrained`` (the per-expert checkpoint layout) and compares archzoo's logits with
transformers' on the real tokens of a padded batch. The round trips check that ``save_hf``
writes exactly the tensors ``save_pretrained`` wrote, and that an archzoo-initialised model
survives archzoo -> Hugging Face -> archzoo bit for bit and gives transformers its logits.
"""

import copy
import dataclasses
import json
import re
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import transformers
from flax import nnx
from safetensors.numpy import load_file, save_file

from archzoo.convert import get_params, load_hf, save_hf, set_params
from archzoo.convert import mixtral as mixtral_convert
from archzoo.convert import olmoe as olmoe_convert
from archzoo.convert import qwen2_moe as qwen_convert
from archzoo.convert import switch_transformers as switch_convert
from archzoo.models import build
from tests.convert import test_encoder_decoders as ed
from tests.convert.test_decoders import archzoo_logits, batch, max_error, randomize_
from tests.convert.test_token_ids import IDS, TOKEN_KEYS, config_ids, generation_ids

TOL = 1e-4
ROUTER_STD = 1.0
# Router logits closer than this could swap an expert between the two implementations (their
# float differences are about 1e-6).
MIN_GAP = 1e-3
SMALL = dict(
    vocab_size=256,
    hidden_size=32,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=48,
    num_hidden_layers=2,
    max_position_embeddings=64,
    bos_token_id=0,
    eos_token_id=0,
    pad_token_id=0,
)
# model_type -> (config class, its kwargs). Mixtral's window 4 < the batch's 12 tokens; Qwen's
# middle layer is dense by mlp_only_layers, so its MoE layers are an explicit list.
CASES = {
    "mixtral": ("MixtralConfig", dict(SMALL, num_local_experts=4, num_experts_per_tok=2, sliding_window=4)),
    "olmoe": ("OlmoeConfig", dict(SMALL, num_experts=4, num_experts_per_tok=2)),
    "qwen2_moe": (
        "Qwen2MoeConfig",
        dict(
            SMALL,
            num_hidden_layers=3,
            intermediate_size=80,
            moe_intermediate_size=24,
            shared_expert_intermediate_size=56,
            num_experts=4,
            num_experts_per_tok=2,
            decoder_sparse_step=1,
            mlp_only_layers=[1],
        ),
    ),
}
EAGER = dict(attn_implementation="eager", experts_implementation="eager")


def hf_moe(model_type: str, seed: int = 0, **overrides):
    """A random transformers decoder of ``model_type`` (CASES), fp32, eval mode."""
    cls_name, kwargs = CASES[model_type]
    config = getattr(transformers, cls_name)(**(kwargs | overrides))
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config, **EAGER).float().eval()
    randomize_(model, seed=seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("mlp.gate.weight"):  # the router [E, D]
                p.copy_(ROUTER_STD * torch.randn_like(p))
    return model


def randomize_archzoo_(model, seed: int) -> None:
    """archzoo's own init made non-trivial as :func:`hf_moe` does (norm scales near 1, biases
    near 0, routers of std ROUTER_STD)."""
    rng = np.random.default_rng(seed)
    params = {}
    for path, w in get_params(model).items():
        leaf = path.rsplit("/", 1)[-1]
        if leaf == "router":
            params[path] = ROUTER_STD * rng.standard_normal(w.shape)
        elif leaf == "scale":
            params[path] = 1.0 + 0.3 * rng.standard_normal(w.shape)
        elif "bias" in leaf:
            params[path] = 0.3 * rng.standard_normal(w.shape)
        else:
            params[path] = 0.1 * rng.standard_normal(w.shape)
    set_params(model, params)


def smallest_gap(router_logits, k: int, real: np.ndarray) -> float:
    """The smallest gap, over the real tokens of every MoE layer, between a token's k-th and
    (k+1)-th router logit (transformers' recorded router logits, ``[tokens, E]`` or
    ``[B, S, E]`` per layer; ``real`` ``[B, S]``): the softmax keeps their order."""
    mask = torch.from_numpy(real.reshape(-1).astype(bool))
    gaps = []
    for logits in router_logits:
        top = torch.topk(logits.float().reshape(-1, logits.shape[-1])[mask], k + 1, dim=-1).values
        gaps.append(float((top[:, k - 1] - top[:, k]).min()))
    return min(gaps)


def experts_used(router_logits, real: np.ndarray) -> list[int]:
    """How many experts are some real token's first choice, per MoE layer."""
    mask = torch.from_numpy(real.reshape(-1).astype(bool))
    return [len(set(logits.reshape(-1, logits.shape[-1])[mask].argmax(-1).tolist())) for logits in router_logits]


def hf_forward(model, tokens, mask):
    with torch.no_grad():
        return model(
            input_ids=torch.tensor(tokens, dtype=torch.long), attention_mask=torch.tensor(mask, dtype=torch.long), output_router_logits=True
        )


def assert_same_params(a, b):
    before, after = get_params(a), get_params(b)
    assert sorted(before) == sorted(after)
    for path in before:
        np.testing.assert_array_equal(after[path], before[path], err_msg=path)


def assert_same_tensors(ours: dict, theirs: dict):
    assert sorted(ours) == sorted(theirs)
    for key in theirs:
        np.testing.assert_array_equal(ours[key], theirs[key], err_msg=key)


# -- the decoders ----------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=sorted(CASES))
def converted(request, tmp_path_factory):
    """A random transformers MoE decoder saved with save_pretrained, its archzoo conversion, and
    both models' logits on a right-padded batch."""
    hf_model = hf_moe(request.param)
    folder = tmp_path_factory.mktemp(request.param)
    hf_model.save_pretrained(folder, safe_serialization=True)
    tokens, mask = batch()
    out = hf_forward(hf_model, tokens, mask)
    model = load_hf(folder)
    return SimpleNamespace(
        model_type=request.param,
        hf_model=hf_model,
        folder=folder,
        model=model,
        tokens=tokens,
        mask=mask,
        hf=out.logits.numpy(),
        router_logits=out.router_logits,
        ours=archzoo_logits(model, tokens, mask),
    )


def test_logits_match_transformers(converted):
    c = converted
    cfg = c.model.config
    assert cfg.name == c.model_type and cfg.moe is not None
    assert np.std(c.hf[c.mask.astype(bool)]) > 0.1, "the reference logits are too flat to tell mappings apart"
    assert smallest_gap(c.router_logits, cfg.moe.top_k, c.mask) > MIN_GAP
    assert min(experts_used(c.router_logits, c.mask)) > 1, "every token picks the same expert"
    assert max_error(c.ours, c.hf, c.mask) <= TOL


def test_checkpoint_is_per_expert_and_qwen_places_its_layers(converted):
    """What the other tests stand on: save_pretrained wrote one tensor per expert (not the fused
    in-memory layout), and Qwen's dense layer 1 sits between MoE layers 0 and 2."""
    keys = load_file(str(converted.folder / "model.safetensors"))
    assert not any("gate_up_proj" in k for k in keys)
    expert = "block_sparse_moe.experts.3.w1" if converted.model_type == "mixtral" else "mlp.experts.3.gate_proj"
    assert f"model.layers.0.{expert}.weight" in keys
    if converted.model_type == "qwen2_moe":
        moe = converted.model.config.moe
        assert [moe.is_moe("decoder", i) for i in range(3)] == [True, False, True]
        assert "model.layers.1.mlp.gate_proj.weight" in keys


def test_save_hf_writes_what_save_pretrained_wrote(converted, tmp_path):
    c = converted
    folder = save_hf(c.model, tmp_path / "out")
    assert_same_tensors(load_file(str(folder / "model.safetensors")), load_file(str(c.folder / "model.safetensors")))
    again = load_hf(folder)
    assert again.config == c.model.config
    assert json.loads((folder / "config.json").read_text())["model_type"] == c.model_type


@pytest.mark.slow
def test_archzoo_to_hf_to_archzoo(converted, tmp_path):
    """An archzoo-initialised model: save_hf -> load_hf gives the same config and weights, and
    transformers reads the folder into a model with the same logits."""
    cfg = converted.model.config
    model = build(cfg, seed=3)
    randomize_archzoo_(model, seed=4)
    folder = save_hf(model, tmp_path / "az")
    again = load_hf(folder)
    assert again.config == cfg
    assert_same_params(model, again)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(folder, **EAGER).float().eval()
    tokens, mask = batch()
    out = hf_forward(reloaded, tokens, mask)
    assert smallest_gap(out.router_logits, cfg.moe.top_k, mask) > MIN_GAP
    assert np.std(out.logits.numpy()[mask.astype(bool)]) > 0.1
    assert max_error(archzoo_logits(model, tokens, mask), out.logits.numpy(), mask) <= TOL


def test_fused_layout_is_read(converted, tmp_path):
    """A folder holding transformers 5's in-memory state dict (fused ``gate_up_proj`` and
    ``down_proj``, Mixtral's MoE under ``mlp``) loads into the same weights."""
    state = {k: np.ascontiguousarray(v.detach().numpy()) for k, v in converted.hf_model.state_dict().items()}
    assert any(k.endswith("mlp.experts.gate_up_proj") for k in state)
    folder = tmp_path / "fused"
    folder.mkdir()
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    shutil.copy(converted.folder / "config.json", folder / "config.json")
    assert_same_params(converted.model, load_hf(folder))


@pytest.mark.parametrize("layout", ["per_expert", "fused"])
def test_expert_tensor_of_another_shape_is_named(converted, tmp_path, layout):
    """One error naming the tensor, its shape and the shape it should have: a per-expert down
    projection stored transposed, or a fused gate_up_proj one row short."""
    if layout == "per_expert":
        shutil.copytree(converted.folder, tmp_path, dirs_exist_ok=True)
        tensors = load_file(str(tmp_path / "model.safetensors"))
        key = next(k for k in sorted(tensors) if re.search(r"experts\.1\.(w2|down_proj)\.weight$", k))
        expected = tensors[key].shape  # [D, F]
        tensors[key] = np.ascontiguousarray(tensors[key].T)
    else:
        tensors = {k: np.ascontiguousarray(v.detach().numpy()) for k, v in converted.hf_model.state_dict().items()}
        shutil.copy(converted.folder / "config.json", tmp_path / "config.json")
        key = next(k for k in sorted(tensors) if k.endswith("experts.gate_up_proj"))
        expected = tensors[key].shape  # [E, 2F, D]
        tensors[key] = np.ascontiguousarray(tensors[key][:, 1:])
    save_file(tensors, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=re.escape(f"tensor {key!r} has shape {tensors[key].shape}, expected {expected}")):
        load_hf(tmp_path)


# -- refusals --------------------------------------------------------------------------------------


def hf_config(model_type: str, **overrides) -> dict:
    """The config.json of CASES' model_type with ``overrides``."""
    cls_name, kwargs = CASES[model_type]
    return json.loads(getattr(transformers, cls_name)(**(kwargs | overrides)).to_json_string())


@pytest.mark.parametrize(
    "model_type, overrides, key",
    [
        ("mixtral", dict(router_jitter_noise=0.1), "router_jitter_noise"),
        ("olmoe", dict(clip_qkv=8.0), "clip_qkv"),
        ("qwen2_moe", dict(use_sliding_window=True, sliding_window=4, max_window_layers=3), "layer_types"),
    ],
)
def test_unconvertible_hf_config_is_refused(tmp_path, model_type, overrides, key):
    (tmp_path / "config.json").write_text(json.dumps(hf_config(model_type, **overrides)))
    with pytest.raises(ValueError, match=rf"'{model_type}'.*{key}"):
        load_hf(tmp_path)


def _moe(cfg, **changes):
    return cfg.replace(moe=dataclasses.replace(cfg.moe, **changes))


@pytest.mark.parametrize(
    "model_type, change, field",
    [
        ("mixtral", lambda c: _moe(c, dispatch="capacity", expert_capacity=4), "moe.dispatch='capacity'"),
        ("mixtral", lambda c: _moe(c, normalize=False), "moe.normalize=False"),
        ("mixtral", lambda c: _moe(c, every=2, offset=1), r"moe.placed.decoder=\[1\]"),
        ("mixtral", lambda c: c.replace(moe=None), "moe=None"),
        ("olmoe", lambda c: c.replace(attention=dataclasses.replace(c.attention, qk_norm="head")), "attention.qk_norm='head'"),
        ("olmoe", lambda c: _moe(c, num_shared_experts=1), "moe.num_shared_experts=1"),
        ("qwen2_moe", lambda c: _moe(c, num_shared_experts=0, shared_d_ff=None, shared_gate=False), "moe.num_shared_experts=0"),
        ("qwen2_moe", lambda c: _moe(c, shared_gate=False), "moe.shared_gate=False"),
    ],
)
def test_save_hf_refuses_what_the_format_cannot_hold(tmp_path, model_type, change, field):
    module = {"mixtral": mixtral_convert, "olmoe": olmoe_convert, "qwen2_moe": qwen_convert}[model_type]
    cfg = change(module.config_from_hf(hf_config(model_type)))
    with pytest.raises(ValueError, match=rf"'{model_type}'.*{field}"):
        save_hf(nnx.eval_shape(lambda: build(cfg)), tmp_path)


def test_equivalent_moe_settings_are_written():
    """An explicit list of every layer, fine-grained experts and the grouped-matmul choice
    compute what the format's reading computes, so they are written."""
    cfg = mixtral_convert.config_from_hf(hf_config("mixtral"))
    twin = _moe(cfg.replace(mlp=dataclasses.replace(cfg.mlp, d_ff=96)), layers=(0, 1), num_experts=2, top_k=1, granularity=2, grouped_matmul="ragged")
    hf = mixtral_convert.config_to_hf(twin)
    assert (hf["num_local_experts"], hf["num_experts_per_tok"], hf["intermediate_size"]) == (4, 2, 48)
    assert mixtral_convert.config_from_hf(hf).moe == cfg.moe


def test_qwen_placement_both_ways():
    """decoder_sparse_step s makes layers s-1, 2s-1, ... MoE (every s, offset s-1);
    mlp_only_layers removes some (an explicit list); the writer finds keys that place the same."""
    for step, dense, want in [(1, [], [0, 1, 2, 3]), (2, [], [1, 3]), (3, [], [2]), (1, [0, 3], [1, 2]), (2, [3], [1])]:
        cfg = qwen_convert.config_from_hf(hf_config("qwen2_moe", num_hidden_layers=4, decoder_sparse_step=step, mlp_only_layers=dense))
        assert [i for i in range(4) if cfg.moe.is_moe("decoder", i)] == want
        hf = transformers.Qwen2MoeConfig.from_dict(qwen_convert.config_to_hf(cfg))
        with torch.device("meta"):
            layers = transformers.Qwen2MoeForCausalLM(hf).model.layers
        assert [i for i, layer in enumerate(layers) if hasattr(layer.mlp, "experts")] == want


# -- Switch Transformer ----------------------------------------------------------------------------

SWITCH = dict(
    vocab_size=ed.V,
    d_model=32,
    d_kv=8,
    d_ff=48,
    num_heads=4,
    num_layers=2,
    num_decoder_layers=2,
    num_sparse_encoder_layers=1,
    num_sparse_decoder_layers=1,
    num_experts=4,
    expert_capacity=64,
    relative_attention_num_buckets=8,
    relative_attention_max_distance=16,
    dropout_rate=0.0,
    decoder_start_token_id=0,
)
Top1Router = transformers.models.switch_transformers.modeling_switch_transformers.SwitchTransformersTop1Router


def hf_switch(seed: int = 0, **overrides):
    torch.manual_seed(seed)
    model = transformers.SwitchTransformersForConditionalGeneration(transformers.SwitchTransformersConfig(**(SWITCH | overrides))).eval()
    ed.randomise_vectors(model)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("router.classifier.weight"):
                p.copy_(ROUTER_STD * torch.randn_like(p))
    return model


def switch_forward(model, enc, enc_mask, dec, dec_mask):
    with torch.no_grad():
        return model(
            input_ids=torch.tensor(enc),
            attention_mask=torch.tensor(enc_mask),
            decoder_input_ids=torch.tensor(dec),
            decoder_attention_mask=torch.tensor(dec_mask),
            output_router_logits=True,
        )


def switch_gaps(out, enc_mask, dec_mask) -> float:
    return min(smallest_gap(out.encoder_router_logits, 1, enc_mask), smallest_gap(out.decoder_router_logits, 1, dec_mask))


def dropped(router_logits, capacity: int) -> int:
    """Tokens transformers drops: per row and expert, the first choices past ``capacity``."""
    n = 0
    for logits in router_logits:  # [B, S, E]
        counts = torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).sum(1)
        n += int((counts - capacity).clamp(min=0).sum())
    return n


def unpadded_batch(seed: int = 5):
    rng = np.random.default_rng(seed)
    enc, dec = rng.integers(3, ed.V, size=(2, 12)), rng.integers(3, ed.V, size=(2, 10))
    return enc, np.ones_like(enc), dec, np.ones_like(dec)


@pytest.fixture(scope="module")
def switch(tmp_path_factory):
    """A random Switch Transformer (capacity 64: nothing drops), saved, and its conversion."""
    hf_model = hf_switch()
    folder = tmp_path_factory.mktemp("switch")
    hf_model.save_pretrained(folder, safe_serialization=True)
    return SimpleNamespace(hf_model=hf_model, folder=folder, model=load_hf(folder))


def test_switch_logits_match_transformers(switch):
    data = ed.batch()
    out = switch_forward(switch.hf_model, *data)
    cfg = switch.model.config
    assert cfg.name == "switch_transformers" and cfg.moe.expert_capacity == 64
    assert [cfg.moe.is_moe(s, i) for s in ("encoder", "decoder") for i in range(2)] == [False, True, False, True]
    assert dropped(out.encoder_router_logits, 64) == dropped(out.decoder_router_logits, 64) == 0
    assert switch_gaps(out, data[1], data[3]) > MIN_GAP
    assert np.std(out.logits.numpy()[data[3].astype(bool)]) > 0.1
    assert ed.max_error(ed.archzoo_logits(switch.model, *data), out.logits.numpy(), data[3]) <= TOL


@pytest.mark.slow
def test_switch_dropping_matches_transformers(switch, tmp_path):
    """Capacity 2 per expert and sequence: transformers drops tokens in both stacks (their MLP
    branch gives 0), which changes its logits; archzoo drops the same ones. Unpadded, since
    transformers' padding takes capacity and archzoo's does not."""
    capacity = 2
    hf_model = copy.deepcopy(switch.hf_model)
    hf_model.config.expert_capacity = capacity
    for module in hf_model.modules():
        if isinstance(module, Top1Router):
            module.expert_capacity = capacity
    hf_model.save_pretrained(tmp_path, safe_serialization=True)
    model = load_hf(tmp_path)
    assert model.config.moe.expert_capacity == capacity
    data = unpadded_batch()
    out = switch_forward(hf_model, *data)
    assert dropped(out.encoder_router_logits, capacity) > 0 and dropped(out.decoder_router_logits, capacity) > 0
    assert switch_gaps(out, data[1], data[3]) > MIN_GAP
    undropped = switch_forward(switch.hf_model, *data).logits.numpy()
    assert ed.max_error(undropped, out.logits.numpy(), data[3]) > 0.01, "dropping does not change the logits"
    assert ed.max_error(ed.archzoo_logits(model, *data), out.logits.numpy(), data[3]) <= TOL


def test_switch_save_hf_writes_what_save_pretrained_wrote(switch, tmp_path):
    folder = save_hf(switch.model, tmp_path / "out")
    assert_same_tensors(load_file(str(folder / "model.safetensors")), load_file(str(switch.folder / "model.safetensors")))
    assert load_hf(folder).config == switch.model.config


@pytest.mark.slow
def test_switch_archzoo_to_hf_to_archzoo(switch, tmp_path):
    cfg = switch.model.config
    model = build(cfg, seed=3)
    randomize_archzoo_(model, seed=4)
    folder = save_hf(model, tmp_path / "az")
    again = load_hf(folder)
    assert again.config == cfg
    assert_same_params(model, again)
    reloaded = transformers.AutoModelForSeq2SeqLM.from_pretrained(folder).eval()
    data = ed.batch(seed=1)
    out = switch_forward(reloaded, *data)
    assert switch_gaps(out, data[1], data[3]) > MIN_GAP
    assert ed.max_error(ed.archzoo_logits(model, *data), out.logits.numpy(), data[3]) <= TOL


def test_switch_expert_tensor_of_another_shape_is_named(switch, tmp_path):
    shutil.copytree(switch.folder, tmp_path, dirs_exist_ok=True)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    key = "encoder.block.1.layer.1.mlp.experts.expert_2.wo.weight"
    tensors[key] = np.ascontiguousarray(tensors[key].T)
    save_file(tensors, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=re.escape(f"tensor {key!r} has shape (48, 32), expected (32, 48)")):
        load_hf(tmp_path)


def test_switch_untied_tables_are_refused(tmp_path):
    """tie_word_embeddings=false gives the encoder, the decoder and shared their own tables,
    which archzoo's one table would lose."""
    hf_switch(tie_word_embeddings=False).save_pretrained(tmp_path, safe_serialization=True)
    with pytest.raises(ValueError, match=r"'encoder\.embed_tokens\.weight' differs from 'shared\.weight'.*tie_word_embeddings=false"):
        load_hf(tmp_path)


@pytest.mark.parametrize(
    "overrides, key",
    [(dict(router_bias=True), "router_bias"), (dict(router_dtype="bfloat16"), "router_dtype"), (dict(num_layers=12, num_decoder_layers=12, num_sparse_encoder_layers=6, num_sparse_decoder_layers=4), "encoder_sparse_step")],
)
def test_switch_unconvertible_config_is_refused(overrides, key):
    hf = json.loads(transformers.SwitchTransformersConfig(**(SWITCH | overrides)).to_json_string())
    with pytest.raises(ValueError, match=rf"'switch_transformers'.*{key}"):
        switch_convert.config_from_hf(hf)


@pytest.mark.parametrize(
    "layers, sparse",
    [((12, 12), (6, 6)), ((12, 12), (12, 12)), ((12, 12), (4, 4)), ((4, 4), (0, 0)), ((2, 4), (3, 2)), ((6, 3), (3, 1)), ((1, 1), (1, 1))],
)
def test_switch_placement_both_ways(layers, sparse):
    """archzoo places exactly transformers' sparse layers, and the config written back makes
    transformers place them again (on the meta device: no weights)."""
    kwargs = dict(num_layers=layers[0], num_decoder_layers=layers[1], num_sparse_encoder_layers=sparse[0], num_sparse_decoder_layers=sparse[1])
    hf = transformers.SwitchTransformersConfig(**(SWITCH | kwargs))
    with torch.device("meta"):
        model = transformers.SwitchTransformersForConditionalGeneration(hf)
    want = {s: [i for i, b in enumerate(getattr(model, s).block) if b.is_sparse] for s in ("encoder", "decoder")}
    cfg = switch_convert.config_from_hf(json.loads(hf.to_json_string()))
    got = {s.name: [i for i in range(s.num_layers) if cfg.moe is not None and cfg.moe.is_moe(s.name, i)] for s in cfg.stacks}
    assert got == want
    written = transformers.SwitchTransformersConfig.from_dict(switch_convert.config_to_hf(cfg))
    with torch.device("meta"):
        again = transformers.SwitchTransformersForConditionalGeneration(written)
    assert {s: [i for i, b in enumerate(getattr(again, s).block) if b.is_sparse] for s in ("encoder", "decoder")} == want


def test_switch_refuses_what_the_format_cannot_hold(tmp_path):
    cfg = switch_convert.config_from_hf(json.loads(transformers.SwitchTransformersConfig(**SWITCH).to_json_string()))
    for change, field in [
        (dict(top_k=2), "moe.top_k=2"),
        (dict(dispatch="dropless"), "moe.dispatch='dropless'"),
        (dict(normalize=True), "moe.normalize=True"),
    ]:
        with pytest.raises(ValueError, match=rf"'switch_transformers'.*{field}"):
            switch_convert.config_to_hf(_moe(cfg, **change))
    placed = cfg.replace(num_layers=6, num_encoder_layers=6, moe=dataclasses.replace(cfg.moe, every=3, offset=2))
    with pytest.raises(ValueError, match=r"moe\.placed\.encoder=\[2, 5\]"):
        switch_convert.config_to_hf(placed)


# -- what every converter keeps (tests/convert/test_token_ids.py, test_tensors.py) ------------------


def hf_any(model_type: str, **overrides):
    return hf_switch(**overrides) if model_type == "switch_transformers" else hf_moe(model_type, **overrides)


ALL_TYPES = [*sorted(CASES), "switch_transformers"]


@pytest.mark.parametrize("model_type", ALL_TYPES)
def test_special_token_ids_survive_load_hf_and_save_hf(model_type, tmp_path):
    ids = IDS | ({"decoder_start_token_id": 9} if model_type == "switch_transformers" else {})
    hf_any(model_type, **ids).save_pretrained(tmp_path / "hf", safe_serialization=True)
    out = save_hf(load_hf(tmp_path / "hf"), tmp_path / "out")
    assert config_ids(out, ids) == [ids, ids]
    assert generation_ids(out, ids) == [ids, ids]


@pytest.mark.parametrize("model_type", ALL_TYPES)
def test_ids_a_config_json_lacks_are_the_transformers_defaults(model_type, tmp_path):
    if model_type == "switch_transformers":
        config = json.loads(transformers.SwitchTransformersConfig(**SWITCH).to_json_string())
    else:
        config = hf_config(model_type)
    for key in TOKEN_KEYS:
        config.pop(key, None)
    (tmp_path / "config.json").write_text(json.dumps(config))
    reference = transformers.AutoConfig.from_pretrained(tmp_path)
    module = {"mixtral": mixtral_convert, "olmoe": olmoe_convert, "qwen2_moe": qwen_convert, "switch_transformers": switch_convert}
    ids = module[model_type].config_from_hf(config).token_ids
    ours = dict(bos_token_id=ids.bos, eos_token_id=ids.eos, pad_token_id=ids.pad, decoder_start_token_id=ids.decoder_start)
    assert ours == {key: getattr(reference, key, None) for key in TOKEN_KEYS}


def test_an_expert_the_config_does_not_have_is_refused_by_name(converted, tmp_path):
    """A fifth expert in a 4-expert checkpoint is a tensor archzoo would not use."""
    shutil.copytree(converted.folder, tmp_path, dirs_exist_ok=True)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    source = next(k for k in sorted(tensors) if re.search(r"experts\.3\.(w1|gate_proj)\.weight$", k))
    extra = source.replace("experts.3.", "experts.4.")
    tensors[extra] = tensors[source]
    save_file(tensors, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=rf"'{converted.model_type}'.*would not use.*{re.escape(repr(extra))}"):
        load_hf(tmp_path)


def test_switch_expert_the_config_does_not_have_is_refused_by_name(switch, tmp_path):
    shutil.copytree(switch.folder, tmp_path, dirs_exist_ok=True)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    source = "decoder.block.1.layer.2.mlp.experts.expert_3.wi.weight"
    extra = source.replace("expert_3", "expert_4")
    tensors[extra] = tensors[source]
    save_file(tensors, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=rf"'switch_transformers'.*would not use.*{re.escape(repr(extra))}"):
        load_hf(tmp_path)


@pytest.mark.parametrize("model_type", ["t5", "bart", "llama", "gpt2"])
def test_a_format_without_experts_refuses_an_moe_model_naming_the_ones_that_have_them(model_type, tmp_path):
    import archzoo
    from archzoo.convert import save_hf

    model = archzoo.build(vocab_size=64, d_model=32, attention={"num_heads": 4}, mlp={"d_ff": 48}, moe={"num_experts": 4, "top_k": 1})
    with pytest.raises(ValueError) as err:
        save_hf(model, tmp_path / "out", model_type=model_type)
    assert f"model_type {model_type!r} has no Mixture-of-Experts layers" in str(err.value)
    assert "switch_transformers" in str(err.value) and not (tmp_path / "out" / "model.safetensors").exists()
