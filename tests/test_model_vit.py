"""ViT (Dosovitskiy et al. 2021) and the Transformer parts of cnnzoo.layers.transformer.

Expected values come from torch's own implementations (F.scaled_dot_product_attention, nn.MultiheadAttention,
nn.TransformerEncoderLayer), the peers' layout fixtures (parameter counts), the paper's Table 1 and the formulas
of Vaswani et al. / note 003 evaluated by hand with `math`.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cnnzoo
from cnnzoo.layers import (
    MultiHeadAttention,
    TransformerEncoderLayer,
    resample_pos_embed,
    scaled_dot_product_attention,
    sinusoidal_position_encoding,
)
from layout_fill import load_layout

VITS = ["vit_b_16", "vit_b_32", "vit_l_16"]


def meta(name, **options):
    with torch.device("meta"):
        return cnnzoo.create_model(name, **options)


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


# --- the paper's networks -------------------------------------------------------------------------


@pytest.mark.parametrize("name", VITS)
def test_parameter_counts_equal_torchvision(name):
    """torchvision's num_params (the fixtures' ``params``): ViT-B/16 86,567,656, B/32 88,224,232, L/16 304,326,632."""
    assert n_params(meta(name)) == load_layout(f"torchvision__{name}")["params"]


def test_timm_vit_base_has_the_same_parameters_as_vit_b_16():
    assert load_layout("timm__vit_base_patch16_224")["params"] == n_params(meta("vit_b_16"))


# Table 1: (layers, hidden size D, MLP size, heads); the patch size is in the name.
TABLE_1 = {"vit_b_16": (12, 768, 3072, 12, 16), "vit_b_32": (12, 768, 3072, 12, 32), "vit_l_16": (24, 1024, 4096, 16, 16)}


@pytest.mark.parametrize("name", VITS)
def test_table_1_structure(name):
    layers, d, mlp, heads, patch = TABLE_1[name]
    m = meta(name)
    blocks = list(m.encoder.layers)
    assert len(blocks) == layers and m.num_features == d
    assert all(b.self_attention.num_heads == heads and b.self_attention.head_dim * heads == d for b in blocks)
    assert all(b.mlp[0].out_features == mlp and b.mlp[3].in_features == mlp for b in blocks)
    assert m.conv_proj.kernel_size == m.conv_proj.stride == (patch, patch)
    assert m.encoder.pos_embedding.shape == (1, 1 + (224 // patch) ** 2, d)  # eq. 1: N + 1 positions
    assert isinstance(blocks[0].mlp[1], nn.GELU) and blocks[0].ln_1.eps == 1e-6


def test_options_change_the_network_as_described():
    base = n_params(meta("vit_tiny_patch4_32"))
    d, n = 192, 64
    assert n_params(meta("vit_tiny_patch4_32", pos_embed="sincos")) == base - (n + 1) * d  # fixed, not learned
    assert n_params(meta("vit_tiny_patch4_32", pos_embed="none")) == base - (n + 1) * d
    # GAP without a class token: neither the token nor its position embedding
    assert n_params(meta("vit_tiny_patch4_32", global_pool="avg", class_token=False)) == base - 2 * d
    assert n_params(meta("vit_tiny_patch4_32", representation_size=64)) == base + d * 64 + 64 + 64 * 10 - d * 10
    assert "encoder.pos_embedding" not in meta("vit_tiny_patch4_32", pos_embed="sincos").state_dict()


@pytest.mark.parametrize("options,match", [
    ({"global_pool": "token", "class_token": False}, "class_token=True"),
    ({"global_pool": "max"}, "global_pool must be one of 'token', 'avg'"),
    ({"pos_embed": "rope"}, "pos_embed must be one of 'learn', 'sincos', 'none'"),
    ({"num_heads": 5}, "multiple of num_heads"),
    ({"drop_path_rate": 1.0}, r"drop_path_rate must be in \[0, 1\)"),
    ({"img_size": 2}, "img_size >= patch_size"),
])
def test_bad_options_are_clear_errors(options, match):
    with pytest.raises(ValueError, match=match):
        cnnzoo.create_model("vit_tiny_patch4_32", **options)


def test_class_token_and_average_pooling_read_the_tokens_they_say():
    torch.manual_seed(0)
    tokens = torch.randn(2, 1 + 16, 192)  # (B, class + 4x4 patches, D)
    tok = cnnzoo.create_model("vit_tiny_patch4_32")
    avg = cnnzoo.create_model("vit_tiny_patch4_32", global_pool="avg")
    avg_no_cls = cnnzoo.create_model("vit_tiny_patch4_32", global_pool="avg", class_token=False)
    assert torch.equal(tok.forward_head(tokens, pre_logits=True), tokens[:, 0])  # eq. 4: the class token's output
    assert torch.allclose(avg.forward_head(tokens, pre_logits=True), tokens[:, 1:].mean(1))  # patches only
    assert torch.allclose(avg_no_cls.forward_head(tokens[:, 1:], pre_logits=True), tokens[:, 1:].mean(1))
    x = torch.randn(2, 3, 32, 32)
    assert tok.forward_features(x).shape == (2, 65, 192) and avg_no_cls.forward_features(x).shape == (2, 64, 192)
    assert tok.num_prefix_tokens == 1 and avg_no_cls.num_prefix_tokens == 0


def test_fused_and_written_out_attention_give_the_same_network():
    torch.manual_seed(0)
    a = cnnzoo.create_model("vit_tiny_patch4_32", fused_attn=True).double().eval()
    b = cnnzoo.create_model("vit_tiny_patch4_32", fused_attn=False).double().eval()
    b.load_state_dict(a.state_dict())
    for p in a.parameters():  # leave the zero-initialised head: make every layer count
        p.data.add_(0.02 * torch.randn_like(p))
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), rtol=1e-10, atol=1e-10)


def test_timm_layout_converts_for_every_vit():
    """timm's key pattern (tests/fixtures/layouts/timm__vit_base_patch16_224.json) maps onto every ViT's keys."""
    timm_keys = [k for k, _, _ in load_layout("timm__vit_base_patch16_224")["state_dict"]]
    for name, (layers, *_rest) in TABLE_1.items():
        keys = [k for k in timm_keys if not k.startswith("blocks.")]
        keys += [k.replace("blocks.0.", f"blocks.{i}.") for i in range(layers) for k in timm_keys
                 if k.startswith("blocks.0.")]
        sd = {k: torch.empty(0) for k in keys}
        out = cnnzoo.convert_state_dict(name, sd, "timm")  # strict: exactly our keys
        assert set(out) == set(meta(name).state_dict())


# Sec. 3.1: "The classification head is implemented by a MLP with one hidden layer at pre-training time and by a
# single linear layer at fine-tuning time"; the hidden width of the authors' pre-training heads is D (Table 1).
@pytest.mark.parametrize("name", VITS)
def test_paper_recipe_from_scratch_has_the_pre_training_mlp_head_with_tanh(name):
    from cnnzoo.train.paper_recipes import paper_config

    cfg, _, _ = paper_config(name, "mnist5k")
    d = TABLE_1[name][1]
    assert cfg.model.options.get("representation_size") == d
    m = meta(name, **cfg.model.options)
    assert isinstance(m.heads.pre_logits, nn.Linear) and m.heads.pre_logits.out_features == d
    assert isinstance(m.heads.act, nn.Tanh) and m.heads.head.in_features == d
    # the fine-tuning head (the default, the one torchvision's and timm's fine-tuned checkpoints have): one Linear
    plain = meta(name)
    assert [k for k in plain.state_dict() if k.startswith("heads.")] == ["heads.head.weight", "heads.head.bias"]


def test_pre_training_head_computes_linear_tanh_linear():
    m = cnnzoo.create_model("vit_tiny_patch4_32", representation_size=16).eval()
    tokens = torch.randn(2, 65, 192)
    h = m.heads
    expected = F.linear(torch.tanh(F.linear(tokens[:, 0], h.pre_logits.weight, h.pre_logits.bias)), h.head.weight,
                        h.head.bias)
    torch.testing.assert_close(m.forward_head(tokens), expected)


def test_timm_pre_logits_head_converts():
    """timm's ViTs with ``representation_size`` (the in21k pre-training checkpoints) name the hidden layer
    ``pre_logits.fc``; it loads into ``heads.pre_logits`` of a network built with the same option."""
    sd = meta("vit_b_16", representation_size=768).state_dict()
    timm = {("pre_logits.fc." + k.split(".")[-1]) if k.startswith("heads.pre_logits.") else
            ("head." + k.split(".")[-1]) if k.startswith("heads.head.") else k: v for k, v in sd.items()}
    out = cnnzoo.convert_state_dict("vit_b_16", timm, "timm", representation_size=768)
    assert "heads.pre_logits.weight" in out and "heads.head.weight" in out


# --- attention, from its equation ----------------------------------------------------------------


def _qkv(b=2, h=3, lq=5, lk=7, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, h, lq, d, generator=g, dtype=torch.float64),
            torch.randn(b, h, lk, d, generator=g, dtype=torch.float64),
            torch.randn(b, h, lk, d, generator=g, dtype=torch.float64))


def test_attention_by_hand_on_two_tokens():
    # one query [1, 0], keys [1, 0] and [0, 1], values 10 and 20: scores 1/sqrt(2) and 0
    q = torch.tensor([[[1.0, 0.0]]], dtype=torch.float64)
    k = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]], dtype=torch.float64)
    v = torch.tensor([[[10.0], [20.0]]], dtype=torch.float64)
    w = math.exp(1 / math.sqrt(2)) / (math.exp(1 / math.sqrt(2)) + 1)
    assert scaled_dot_product_attention(q, k, v).item() == pytest.approx(10 * w + 20 * (1 - w), rel=1e-14)


@pytest.mark.parametrize("case", ["plain", "causal", "bool_mask", "float_mask", "scale"])
def test_attention_equals_torch_scaled_dot_product_attention(case):
    q, k, v = _qkv(lq=6, lk=6 if case == "causal" else 7)
    kwargs = {}
    if case == "causal":
        kwargs["is_causal"] = True
    elif case == "bool_mask":
        mask = torch.rand(6, 7, generator=torch.Generator().manual_seed(1)) > 0.3
        mask[:, 0] = True  # every query keeps a key
        kwargs["attn_mask"] = mask
    elif case == "float_mask":
        kwargs["attn_mask"] = torch.randn(2, 1, 6, 7, dtype=torch.float64)
    elif case == "scale":
        kwargs["scale"] = 0.3
    ours = scaled_dot_product_attention(q, k, v, **kwargs)
    torch.testing.assert_close(ours, F.scaled_dot_product_attention(q, k, v, **kwargs), rtol=1e-12, atol=1e-12)


def _copy_from_torch(ours: MultiHeadAttention, ref: nn.MultiheadAttention) -> None:
    ours.load_state_dict({"in_proj_weight": ref.in_proj_weight, "in_proj_bias": ref.in_proj_bias,
                          "out_proj.weight": ref.out_proj.weight, "out_proj.bias": ref.out_proj.bias})


@pytest.mark.parametrize("fused", [True, False])
def test_multi_head_attention_equals_torch_multihead_attention(fused):
    torch.manual_seed(0)
    ref = nn.MultiheadAttention(24, 4, batch_first=True, dtype=torch.float64)
    nn.init.normal_(ref.in_proj_bias)
    nn.init.normal_(ref.out_proj.bias)
    ours = MultiHeadAttention(24, 4, fused=fused).double()
    _copy_from_torch(ours, ref)
    x, ctx = torch.randn(2, 9, 24, dtype=torch.float64), torch.randn(2, 5, 24, dtype=torch.float64)
    expected, _ = ref(x, x, x, need_weights=False)
    torch.testing.assert_close(ours(x), expected, rtol=1e-12, atol=1e-12)
    expected, _ = ref(x, ctx, ctx, need_weights=False)  # cross-attention: queries from x, keys and values from ctx
    torch.testing.assert_close(ours(x, context=ctx), expected, rtol=1e-12, atol=1e-12)
    causal = torch.ones(9, 9, dtype=torch.bool).triu(1)  # torch's bool mask: True = masked out
    expected, _ = ref(x, x, x, attn_mask=causal, need_weights=False)
    torch.testing.assert_close(ours(x, is_causal=True), expected, rtol=1e-12, atol=1e-12)


def test_encoder_layer_equals_torch_pre_norm_transformer_layer():
    """Eq. 2-3 (pre-norm, GELU MLP) is torch's TransformerEncoderLayer with norm_first=True."""
    torch.manual_seed(0)
    ref = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, activation="gelu", layer_norm_eps=1e-6,
                                     batch_first=True, norm_first=True, dtype=torch.float64).eval()
    ours = TransformerEncoderLayer(32, 4, 64).double().eval()
    sd = ref.state_dict()
    ours.load_state_dict({
        "ln_1.weight": sd["norm1.weight"], "ln_1.bias": sd["norm1.bias"],
        "self_attention.in_proj_weight": sd["self_attn.in_proj_weight"],
        "self_attention.in_proj_bias": sd["self_attn.in_proj_bias"],
        "self_attention.out_proj.weight": sd["self_attn.out_proj.weight"],
        "self_attention.out_proj.bias": sd["self_attn.out_proj.bias"],
        "ln_2.weight": sd["norm2.weight"], "ln_2.bias": sd["norm2.bias"],
        "mlp.0.weight": sd["linear1.weight"], "mlp.0.bias": sd["linear1.bias"],
        "mlp.3.weight": sd["linear2.weight"], "mlp.3.bias": sd["linear2.bias"]})
    x = torch.randn(2, 10, 32, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-12, atol=1e-12)


# --- position encodings --------------------------------------------------------------------------


def test_sinusoidal_encoding_equals_the_formula_at_hand_picked_positions():
    pe = sinusoidal_position_encoding(50, 6, dtype=torch.float64)
    assert pe.shape == (50, 6)
    # PE(pos, 2i) = sin(pos / 10000^(2i/6)), PE(pos, 2i+1) = cos(pos / 10000^(2i/6)); 10000^(1/3) = 21.544...
    assert pe[0].tolist() == [0.0, 1.0, 0.0, 1.0, 0.0, 1.0]
    assert pe[3, 0].item() == pytest.approx(math.sin(3.0), abs=1e-15)
    assert pe[3, 1].item() == pytest.approx(math.cos(3.0), abs=1e-15)
    assert pe[3, 2].item() == pytest.approx(math.sin(3 / 21.544346900318835), abs=1e-15)
    assert pe[49, 3].item() == pytest.approx(math.cos(49 / 21.544346900318835), abs=1e-15)
    assert pe[49, 5].item() == pytest.approx(math.cos(49 / 464.15888336127773), abs=1e-15)  # 10000^(2/3)
    odd = sinusoidal_position_encoding(4, 5, dtype=torch.float64)  # an odd width ends with a sine channel
    assert odd[2, 4].item() == pytest.approx(math.sin(2 / 10000 ** (4 / 5)), abs=1e-15)


def test_sinusoidal_encoding_of_a_shifted_position_is_a_rotation():
    """Note 003: sin and cos so that PE(pos + k) is a linear function (a rotation per frequency) of PE(pos)."""
    pe = sinusoidal_position_encoding(40, 8, dtype=torch.float64)
    k = 5
    for i in range(4):
        w = 1 / 10000 ** (2 * i / 8)
        # [sin(a + b), cos(a + b)] = [sin a, cos a] @ [[cos b, -sin b], [sin b, cos b]], b = k w
        rot = torch.tensor([[math.cos(k * w), -math.sin(k * w)], [math.sin(k * w), math.cos(k * w)]],
                           dtype=torch.float64)
        pair = pe[:, 2 * i: 2 * i + 2]  # (sin, cos) of pos * w
        torch.testing.assert_close(pair[:-k] @ rot, pair[k:], rtol=0, atol=1e-12)


def test_sincos_option_uses_the_formula_over_the_token_index():
    m = cnnzoo.create_model("vit_tiny_patch4_32", pos_embed="sincos")
    torch.testing.assert_close(m.encoder.pos_embedding[0], sinusoidal_position_encoding(65, 192))


def test_resample_keeps_the_class_token_and_is_the_identity_at_the_native_grid():
    torch.manual_seed(0)
    pos = torch.randn(1, 1 + 14 * 14, 8)
    assert resample_pos_embed(pos, (14, 14), (14, 14)) is pos
    out = resample_pos_embed(pos, (7, 10), (14, 14))
    assert out.shape == (1, 1 + 70, 8) and torch.equal(out[:, 0], pos[:, 0])
    assert resample_pos_embed(pos[:, 1:], (5, 5), (14, 14), num_prefix_tokens=0).shape == (1, 25, 8)


def test_resampled_grid_follows_a_smooth_embedding():
    """Upsampling a 7x7 grid of a linear ramp gives the ramp at the new patch centres (bicubic is exact on linear
    functions away from the border; align_corners=False puts centres at (i + 0.5) / n)."""
    n_old, n_new = 7, 14
    c_old = (torch.arange(n_old, dtype=torch.float64) + 0.5) / n_old
    ramp = (2 * c_old[:, None] + 3 * c_old[None, :]).reshape(1, -1, 1)
    out = resample_pos_embed(ramp, (n_new, n_new), (n_old, n_old), num_prefix_tokens=0).reshape(n_new, n_new)
    c_new = (torch.arange(n_new, dtype=torch.float64) + 0.5) / n_new
    expected = 2 * c_new[:, None] + 3 * c_new[None, :]
    inner = slice(3, n_new - 3)  # the bicubic kernel reaches 2 old pixels: clamped at the border
    torch.testing.assert_close(out[inner, inner], expected[inner, inner], rtol=0, atol=1e-6)


def test_other_input_sizes_run_with_interpolated_position_embeddings():
    torch.manual_seed(0)
    m = cnnzoo.create_model("vit_tiny_patch4_32").eval()
    nn.init.normal_(m.heads.head.weight)
    with torch.no_grad():
        native = m(torch.randn(2, 3, 32, 32))
        x = torch.randn(1, 3, 48, 40)  # a 12 x 10 grid instead of 8 x 8
        assert m(x).shape == (1, 10) and torch.isfinite(m(x)).all()
        assert m.forward_features(x).shape == (1, 1 + 12 * 10, 192)
        mnist = cnnzoo.create_model("vit_tiny_patch4_32", in_channels=1).eval()
        assert mnist(torch.randn(2, 1, 28, 28)).shape == (2, 10)  # 7 x 7 patches of an MNIST digit
    assert native.shape == (2, 10)


# --- analysis ------------------------------------------------------------------------------------


def test_vit_b_16_summary_counts_attention_matmuls_like_torchvision():
    """torchvision's 17.564 GMACs = patch embedding + 12 x (qkv, QK^T, AV, proj, MLP) + head, by hand."""
    from cnnzoo.analysis import summarize

    n, d, mlp = 197, 768, 3072
    per_layer = n * d * 3 * d + 2 * n * n * d + n * d * d + 2 * n * d * mlp
    by_hand = 196 * 768 * 3 * 16 * 16 + 12 * per_layer + 768 * 1000
    s = summarize(meta("vit_b_16"), (3, 224, 224))
    assert s.macs == by_hand
    assert s.macs / 1e9 == pytest.approx(17.564, rel=1e-4)
    attn = s.find("encoder.layers.encoder_layer_0.self_attention")
    assert attn.macs == n * d * 3 * d + 2 * n * n * d  # qkv projection + QK^T + AV (out_proj has its own row)


def test_vit_receptive_field_is_the_patch_then_the_whole_image():
    from cnnzoo.analysis import summarize

    s = summarize(meta("vit_b_16"), (3, 224, 224))
    assert s.find("conv_proj").rf == (16, 16) and s.find("conv_proj").jump == (16, 16)
    assert s.find("encoder.layers.encoder_layer_0.ln_1").rf == (16, 16)  # tokens before any attention: one patch
    for i in (0, 11):  # every token sees all 14 x 14 patches after one attention: 16 + 13 * 16 = 224
        block = s.find(f"encoder.layers.encoder_layer_{i}.self_attention")
        assert block.rf == (224, 224) and block.jump == (16, 16)
    assert s.find("encoder.layers.encoder_layer_11.mlp.3").rf == (224, 224)  # and it does not grow further


def test_vit_summary_is_the_same_on_the_cpu_as_on_the_meta_device():
    """On the CPU, F.scaled_dot_product_attention is one fused kernel that FlopCounterMode does not count; the
    summary counts it with the same formula, so MACs and fields do not depend on the device."""
    from torch.utils.flop_counter import FlopCounterMode

    from cnnzoo.analysis import summarize

    cpu = cnnzoo.create_model("vit_tiny_patch4_32")
    a, b = summarize(cpu, (3, 32, 32), device="cpu"), summarize(meta("vit_tiny_patch4_32"), (3, 32, 32))
    assert a.macs == b.macs and [r.rf for r in a.layers] == [r.rf for r in b.layers]
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        cpu.eval()(torch.zeros(1, 3, 32, 32))
    attention = 6 * 2 * 65 * 65 * 192  # 6 layers x (QK^T + AV), 65 tokens, D = 192
    assert counter.get_total_flops() // 2 == a.macs - attention  # torch 2.x's counter misses the CPU kernel


# --- training ------------------------------------------------------------------------------------


def test_cli_trains_the_small_vit_on_mnist5k(tmp_path, capsys):
    from cnnzoo.cli.main import main

    run = tmp_path / "vit"
    code = main(["train", "vit_tiny_patch4_32", "--data", "mnist5k", "--epochs", "1", "--limit-batches", "3",
                 "--run-dir", str(run), "--no-download", "--quiet"])
    assert code == 0
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 1 and math.isfinite(metrics[0]["train_loss"]) and 0.0 <= metrics[0]["test_acc"] <= 1.0
    config = (run / "config.yaml").read_text()
    assert "adamw" in config  # the card's recipe hint reached the run
