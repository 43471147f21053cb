"""Our native models against transformers' Llama / Qwen2 with the same weights, and the loaders'
handling of real checkpoint layouts and broken folders."""

import json
import re

import pytest
import torch
from safetensors.torch import load_file, save_file

import dllm
from dllm.errors import DllmError

TOL = 1e-4


def llama_name(name: str) -> str:
    """LLaDA checkpoint name -> transformers Llama name (written out independently of dllm's table)."""
    table = {"attn_out": "self_attn.o_proj", "q_proj": "self_attn.q_proj", "k_proj": "self_attn.k_proj",
             "v_proj": "self_attn.v_proj", "ff_proj": "mlp.gate_proj", "up_proj": "mlp.up_proj",
             "ff_out": "mlp.down_proj", "attn_norm": "input_layernorm", "ff_norm": "post_attention_layernorm"}
    m = re.match(r"model\.transformer\.blocks\.(\d+)\.(\w+)\.(weight|bias)", name)
    if m:
        return f"model.layers.{m[1]}.{table[m[2]]}.{m[3]}"
    return {"model.transformer.wte.weight": "model.embed_tokens.weight",
            "model.transformer.ln_f.weight": "model.norm.weight",
            "model.transformer.ff_out.weight": "lm_head.weight"}[name]


def reference(folder, family):
    cfg = json.loads((folder / "config.json").read_text())
    state = load_file(str(folder / "model.safetensors"))
    if family == "llada":
        from transformers import LlamaConfig, LlamaForCausalLM
        hf_cfg = LlamaConfig(vocab_size=cfg["embedding_size"], hidden_size=cfg["d_model"],
                             intermediate_size=cfg["mlp_hidden_size"], num_hidden_layers=cfg["n_layers"],
                             num_attention_heads=cfg["n_heads"], num_key_value_heads=cfg["n_kv_heads"],
                             rms_norm_eps=cfg["rms_norm_eps"],
                             rope_theta=cfg["rope_theta"], attention_bias=False, tie_word_embeddings=False,
                             max_position_embeddings=cfg["max_sequence_length"])
        model, state = LlamaForCausalLM(hf_cfg), {llama_name(k): v for k, v in state.items()}
    else:
        from transformers import Qwen2Config, Qwen2ForCausalLM
        hf_cfg = Qwen2Config(vocab_size=cfg["vocab_size"], hidden_size=cfg["hidden_size"],
                             intermediate_size=cfg["intermediate_size"], num_hidden_layers=cfg["num_hidden_layers"],
                             num_attention_heads=cfg["num_attention_heads"],
                             num_key_value_heads=cfg["num_key_value_heads"], rms_norm_eps=cfg["rms_norm_eps"],
                             rope_theta=cfg["rope_theta"], tie_word_embeddings=False,
                             max_position_embeddings=cfg["max_position_embeddings"])
        model = Qwen2ForCausalLM(hf_cfg)
    hf_cfg._attn_implementation = "eager"
    model.config._attn_implementation = "eager"
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all("rotary" in m for m in missing), (missing, unexpected)
    return model.eval(), cfg


def direct_mask(valid, positions, kind, block):
    """Additive mask [B, 1, L, L] built entry by entry (independent of dllm.models.core.attention_mask)."""
    b, n = valid.shape
    m = torch.full((b, 1, n, n), torch.finfo(torch.float32).min)
    for r in range(b):
        for q in range(n):
            for k in range(n):
                ok = bool(valid[r, k])
                if kind == "block_causal":
                    ok = ok and positions[r, k] // block <= positions[r, q] // block
                if ok:
                    m[r, 0, q, k] = 0.0
    return m


@pytest.mark.parametrize("family", ["llada", "dream", "fast_dllm_v2"])
def test_parity_with_transformers(checkpoints, family):
    folder = checkpoints[family]
    ours = dllm.load(folder)
    ref, cfg = reference(folder, family)
    torch.manual_seed(0)
    # two rows, the second left-padded by 3: padding must be invisible and positions restart at 0
    ids = torch.randint(5, ours.core.cfg.vocab_size, (2, 19))
    valid = torch.ones(2, 19, dtype=torch.bool)
    valid[1, :3] = False
    positions = (valid.long().cumsum(-1) - 1).clamp_min(0)
    block = cfg.get("bd_size", 0)
    with torch.no_grad():
        got = ours(ids, positions, valid)
        want = ref(input_ids=ids, position_ids=positions,
                   attention_mask=direct_mask(valid, positions, ours.attention_kind, block)).logits
    if ours.shifted:  # the wrapper undoes the token shift: row i predicts token i
        want = torch.cat([want[:, :1], want[:, :-1]], dim=1)
    err = (got - want)[valid].abs().max().item()
    assert err <= TOL, f"{family}: max |Δlogit| = {err:.2e}"
    # window logits equal the same rows of the full forward
    with torch.no_grad():
        win = ours(ids, positions, valid, window=(7, 15))
    assert torch.allclose(win, got[:, 7:15], atol=1e-5)


def test_block_causal_mask_blocks_future(checkpoints):
    m = dllm.load(checkpoints["fast_dllm_v2"])  # bd_size 8
    ids = torch.randint(5, 30, (1, 24))
    pos = torch.arange(24)[None]
    valid = torch.ones(1, 24, dtype=torch.bool)
    with torch.no_grad():
        a = m(ids, pos, valid)
        ids2 = ids.clone()
        ids2[0, 17] = (ids[0, 17] + 1) % 30  # a token in block 2 ([16, 24))
        b = m(ids2, pos, valid)
    # unshifted rows predict their own token: rows ≤ 16 come from positions in blocks 0–1 or
    # position 16's left neighbour; block-causal attention keeps them unchanged
    assert torch.equal(a[:, :17], b[:, :17])
    assert not torch.equal(a[:, 18:], b[:, 18:])


def test_sharded_equals_single(tmp_path):
    from dllm.testing import tiny_checkpoint
    one = dllm.load(tiny_checkpoint(tmp_path / "one", "dream", seed=3))
    many_dir = tiny_checkpoint(tmp_path / "many", "dream", seed=3, max_shard_bytes=8000)
    assert (many_dir / "model.safetensors.index.json").exists()
    many = dllm.load(many_dir)
    for (n1, p1), (n2, p2) in zip(one.core.state_dict().items(), many.core.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2)


def _broken(tmp_path, checkpoints, edit):
    import shutil
    folder = tmp_path / "broken"
    shutil.copytree(checkpoints["llada"], folder)
    state = load_file(str(folder / "model.safetensors"))
    edit(state)
    save_file(state, str(folder / "model.safetensors"))
    return folder


@pytest.mark.parametrize("edit, pattern", [
    (lambda s: s.pop("model.transformer.blocks.1.up_proj.weight"),
     r"missing tensor 'model\.transformer\.blocks\.1\.up_proj\.weight'"),
    (lambda s: s.__setitem__("model.transformer.blocks.0.extra.weight", torch.zeros(2)),
     r"'model\.transformer\.blocks\.0\.extra\.weight'.*not part"),
    (lambda s: s.__setitem__("model.transformer.ln_f.weight", torch.zeros(7)),
     r"'model\.transformer\.ln_f\.weight' has shape \(7,\)"),
])
def test_broken_checkpoint_one_line(tmp_path, checkpoints, edit, pattern):
    folder = _broken(tmp_path, checkpoints, edit)
    with pytest.raises(DllmError, match=pattern) as e:
        dllm.load(folder)
    assert "\n" not in str(e.value)


def test_tokenizer_without_mask_token(tmp_path):
    from dllm.loading import new_model, save_pretrained
    from dllm.testing import tiny_core_config, tiny_tokenizer
    tok = tiny_tokenizer(mask_token=None)
    model = new_model(tiny_core_config("llada", len(tok)), tok, "llada", 0, [0], 0)
    folder = save_pretrained(model, tmp_path / "nomask")
    cfg = json.loads((folder / "config.json").read_text())
    del cfg["mask_token_id"]
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(DllmError, match="no mask token"):
        dllm.load(folder)


def test_unknown_model_name():
    with pytest.raises(DllmError, match="model must be one of the built-in models"):
        dllm.load("no-such-model")


def test_generic_transformers_adapter(tmp_path):
    from transformers import BertConfig, BertForMaskedLM

    from dllm.testing import tiny_tokenizer
    tok = tiny_tokenizer("[MASK]", "[SEP]")
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=40, max_position_embeddings=64)
    torch.manual_seed(0)
    bert = BertForMaskedLM(cfg).eval()
    bert.save_pretrained(tmp_path / "bert")
    tok.save_pretrained(tmp_path / "bert")
    model = dllm.load(tmp_path / "bert")
    assert model.family == "hf" and model.mask_token_id == tok.mask_token_id
    ids = torch.randint(3, len(tok), (1, 9))
    with torch.no_grad():
        assert torch.allclose(model(ids, torch.arange(9)[None], torch.ones(1, 9, dtype=torch.bool)),
                              bert(input_ids=ids).logits, atol=1e-5)
    out = dllm.generate(model, ["the cat"], dllm.samplers.LLaDASampler(), gen_length=8, block_length=4)
    assert out.stats[0].nfe == 8


def test_broken_checkpoint_files_are_one_line_errors(tmp_path):
    """An invalid config.json or a truncated safetensors file: DllmError naming the file, not the
    library's JSONDecodeError / SafetensorError."""
    import shutil

    from dllm.errors import DllmError
    from dllm.testing import tiny_checkpoint

    good = tiny_checkpoint(tmp_path / "good", "llada", seed=0)
    bad_cfg = tmp_path / "bad_cfg"
    shutil.copytree(good, bad_cfg)
    (bad_cfg / "config.json").write_text("{not json")
    with pytest.raises(DllmError, match=r"config.json is not valid JSON"):
        dllm.load(str(bad_cfg))
    torn = tmp_path / "torn"
    shutil.copytree(good, torn)
    weights = sorted(torn.glob("*.safetensors"))[0]
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(DllmError, match=r"is not a readable safetensors file"):
        dllm.load(str(torn))


def test_tokenizer_larger_than_the_embedding_is_refused_at_load(tmp_path):
    from dllm.errors import DllmError
    from dllm.testing import tiny_checkpoint

    folder = tiny_checkpoint(tmp_path / "m", "llada", seed=0)
    cfg = json.loads((folder / "config.json").read_text())
    tok = dllm.load(str(folder)).tokenizer
    tok.add_tokens([f"extra{i}" for i in range(cfg["vocab_size"])])
    tok.save_pretrained(folder)
    with pytest.raises(DllmError, match=r"tokenizer of m has \d+ tokens but the model's embedding has"):
        dllm.load(str(folder))


@pytest.mark.parametrize("rows", [1, 2, 8, 33, 65])
def test_vocab_projection_fast_path_equals_the_linear_head(rows):
    """The CPU inference head (W Hᵀ)ᵀ against F.linear in float64 (the independent computation),
    and every case that must keep the module's own call bit for bit."""
    from torch import nn

    from dllm.models.core import vocab_logits

    torch.manual_seed(rows)
    head = nn.Linear(96, 9000, bias=False)
    h = torch.randn(2, rows, 96)
    want = torch.nn.functional.linear(h.double(), head.weight.double())
    with torch.no_grad():
        got = vocab_logits(head, h)
        assert got.shape == (2, rows, 9000) and got.is_contiguous()
        assert (got.double() - want).abs().max().item() < 1e-4
        biased = nn.Linear(96, 9000)
        assert torch.equal(vocab_logits(biased, h), biased(h))  # a bias: the module's own call
        one = h[:1, :1]
        assert torch.equal(vocab_logits(head, one), head(one))  # one row: the same matrix-vector product
        small = nn.Linear(96, 837, bias=False)
        assert torch.equal(vocab_logits(small, h), small(h))  # a small vocabulary: F.linear is faster
    with torch.enable_grad():  # training keeps nn.Linear (and its backward)
        h.requires_grad_(True)
        out = vocab_logits(head, h)
        assert out.grad_fn is not None and torch.equal(out, head(h))
