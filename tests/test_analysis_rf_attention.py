"""Receptive fields of dilated, depthwise, grouped and spatially separable convolutions and of attention over
tokens; MACs of fused attention kernels; `compare-arch`'s per-stage resolutions.

Expected fields are hand computations of the recurrence rf += D(K - 1) * jump, jump *= S (Araujo et al. 2019,
"Computing Receptive Fields of Convolutional Neural Networks"), which groups do not enter.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import cnnzoo
from cnnzoo.analysis import arithmetic as ar
from cnnzoo.analysis import summarize
from cnnzoo.cli.main import main


def meta(build):
    with torch.device("meta"):
        return build()


def rfs(model, size):
    return [r.rf for r in summarize(model, size).layers]


# --- convolutions --------------------------------------------------------------------------------


def test_dilated_3x3_sees_5_pixels_and_two_of_them_9():
    model = meta(lambda: nn.Sequential(nn.Conv2d(1, 1, 3, padding=2, dilation=2), nn.Conv2d(1, 1, 3, padding=2,
                                                                                            dilation=2)))
    assert rfs(model, (1, 16, 16)) == [(5, 5), (9, 9)]
    assert ar.receptive_field([(3, 1, 2), (3, 1, 2)]) == [(5, 1), (9, 1)]
    assert ar.receptive_field_backward([(3, 1, 2), (3, 1, 2)]) == 9  # the notes' recurrence, K -> D(K-1)+1


def test_dilation_after_a_stride_counts_in_strided_pixels():
    # 3x3/2 (rf 3, jump 2), then a 3x3 with dilation 2: its taps are 2 map pixels = 4 input pixels apart: 3 + 2*2*2
    model = meta(lambda: nn.Sequential(nn.Conv2d(1, 1, 3, stride=2), nn.Conv2d(1, 1, 3, dilation=2)))
    s = summarize(model, (1, 32, 32))
    assert [(r.rf, r.jump) for r in s.layers] == [((3, 3), (2, 2)), ((11, 11), (2, 2))]
    assert ar.receptive_field_backward([(3, 2), (3, 1, 2)]) == 11


@pytest.mark.parametrize("groups", [1, 4, 8])
def test_groups_do_not_change_the_field_depthwise_separable_chain(groups):
    """dw 3x3/2 -> pw 1x1 -> dw 3x3: fields 3, 3, 3 + 2 * 2 = 7, whatever the grouping; MACs divide by groups."""
    model = meta(lambda: nn.Sequential(nn.Conv2d(8, 8, 3, 2, 1, groups=groups, bias=False),
                                       nn.Conv2d(8, 16, 1, bias=False),
                                       nn.Conv2d(16, 16, 3, 1, 1, groups=min(groups, 16), bias=False)))
    s = summarize(model, (8, 16, 16))
    assert [r.rf for r in s.layers] == [(3, 3), (3, 3), (7, 7)]
    assert [r.jump for r in s.layers] == [(2, 2)] * 3
    assert s.layers[0].macs == 8 * 8 * 8 * (8 // groups) * 9  # 8x8 outputs x 8 channels x (8/groups) x 3x3
    assert s.layers[0].groups == groups


def test_spatially_separable_convs_and_a_2x1_pool_grow_each_axis_on_its_own():
    """EffNet's block (Freeman et al. 2018): dw 1x3, max-pool 2x1 (stride 2 along height), dw 3x1."""
    model = meta(lambda: nn.Sequential(nn.Conv2d(4, 4, (1, 3), padding=(0, 1), groups=4),
                                       nn.MaxPool2d((2, 1), (2, 1)),
                                       nn.Conv2d(4, 4, (3, 1), padding=(1, 0), groups=4)))
    s = summarize(model, (4, 16, 16))
    # height: 1, then 1 + 1 = 2 (jump 2), then 2 + 2 * 2 = 6; width: 3, 3, 3
    assert [(r.rf, r.jump) for r in s.layers] == [((1, 3), (1, 1)), ((2, 3), (2, 1)), ((6, 3), (2, 1))]


def _last_conv(name):
    if name not in cnnzoo.list_models():
        pytest.skip(f"{name} is not registered yet")
    s = summarize(meta(lambda: cnnzoo.create_model(name)), cnnzoo.get_card(name).input_size)
    return [r for r in s.layers if r.type.startswith("Conv2d")][-1]


def test_mobilenet_v1_sees_315_pixels():
    """3x3/2 stem, then 13 depthwise 3x3 (stride 2 in the 2nd, 4th, 6th and 12th; Howard et al. Table 1):
    3, 7, 11 (j4), 19, 27 (j8), 43, 59 (j16), 5 x 32 -> 219, 251 (j32), 315 (Araujo et al. 2019 list 315 too)."""
    last = _last_conv("mobilenet_v1")
    assert last.rf == (315, 315) and last.jump == (32, 32)


def test_mobilenet_v2_sees_491_pixels():
    """3x3/2 stem (3, j2) and one depthwise 3x3 per bottleneck of Sandler et al. Table 2: t=1 block 7; 24: 11 (j4),
    19; 32: 27 (j8), 43, 59; 64: 75 (j16), 107, 139, 171; 96: 203, 235, 267; 160: 299 (j32), 363, 427; 320: 491."""
    last = _last_conv("mobilenet_v2")
    assert last.rf == (491, 491) and last.jump == (32, 32)


# --- tokens and attention ------------------------------------------------------------------------


class TinyTransformer(nn.Module):
    """Patches of 4 on a 16x16 image (a 4x4 grid), a class token, a per-token linear layer, two self-attentions
    written out (Q K^T, A V), then a token-mixing linear layer over the 16 patch tokens (MLP-Mixer)."""

    def __init__(self, d=8):
        super().__init__()
        self.patch = nn.Conv2d(3, d, 4, 4)
        self.cls = nn.Parameter(torch.zeros(1, 1, d))
        self.per_token = nn.Linear(d, d)
        self.attn1 = nn.Linear(d, 3 * d)
        self.attn2 = nn.Linear(d, 3 * d)
        self.mix = nn.Linear(16, 16)

    @staticmethod
    def attend(qkv):
        q, k, v = qkv.chunk(3, dim=-1)
        return (q @ k.transpose(1, 2)).softmax(-1) @ v

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)  # (B, 16, d)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1)  # (B, 17, d)
        x = self.per_token(x)
        x = x + self.attend(self.attn1(x))
        x = x + self.attend(self.attn2(x))
        return self.mix(x[:, 1:].transpose(1, 2))  # (B, d, 16): mixes the patch tokens


def test_tokens_see_their_patch_until_attention_then_the_whole_image():
    s = summarize(meta(TinyTransformer), (3, 16, 16))
    assert s.find("patch").rf == (4, 4) and s.find("patch").jump == (4, 4)
    assert s.find("per_token").rf == (4, 4)  # a linear layer over channels keeps each token's field
    assert s.find("attn1").rf == (4, 4)  # the qkv projection, before the products
    assert s.find("attn2").rf == (16, 16)  # after one attention: 4 + (4 - 1) * 4, the whole image
    assert s.find("(model)").rf == (16, 16)  # and a second attention does not enlarge it


def test_a_token_mixing_linear_layer_sees_the_whole_image():
    class Mixer(nn.Module):
        def __init__(self):
            super().__init__()
            self.patch = nn.Conv2d(3, 8, 4, 4)
            self.channels = nn.Linear(8, 8)
            self.tokens = nn.Linear(16, 16)  # over the 16 patch tokens

        def forward(self, x):
            x = self.channels(self.patch(x).flatten(2).transpose(1, 2))  # (B, 16, 8)
            return self.tokens(x.transpose(1, 2))  # (B, 8, 16)

    s = summarize(meta(Mixer), (3, 16, 16))
    assert s.find("channels").rf == (4, 4) and s.find("tokens").rf == (16, 16)


def test_tokens_reshaped_back_into_a_map_are_a_map_again():
    class Back(nn.Module):
        def __init__(self):
            super().__init__()
            self.patch = nn.Conv2d(3, 8, 4, 4)
            self.conv = nn.Conv2d(8, 8, 3, padding=1)

        def forward(self, x):
            t = self.patch(x).flatten(2).transpose(1, 2)  # (B, 16, 8) tokens
            return self.conv(t.transpose(1, 2).reshape(x.shape[0], 8, 4, 4))

    s = summarize(meta(Back), (3, 16, 16))
    assert s.find("conv").rf == (12, 12) and s.find("conv").jump == (4, 4)  # 4 + 2 * 4, as without the detour


class TorchAttention(nn.Module):
    """torch.nn.MultiheadAttention over 4x4 patches: on the CPU in eval mode it runs one fused kernel."""

    def __init__(self, d=16, heads=2):
        super().__init__()
        self.patch = nn.Conv2d(3, d, 4, 4)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)
        return self.attn(t, t, t, need_weights=False)[0]


def test_fused_attention_kernels_count_like_their_meta_decomposition():
    """F.scaled_dot_product_attention and nn.MultiheadAttention run fused kernels on the CPU that FlopCounterMode
    does not count; the summary gives them the MACs of the matmuls they fuse, so every device agrees."""
    n, d = 16, 16
    by_hand = n * d * 48 + (n * 3 * d * d + n * d * d) + 2 * n * n * d  # patch conv, Q/K/V + out proj, QK^T + AV
    torch.manual_seed(0)
    cpu = TorchAttention().eval()
    meta_model = meta(TorchAttention)
    assert summarize(meta_model, (3, 16, 16)).macs == by_hand
    s = summarize(cpu, (3, 16, 16), device="cpu")
    assert s.macs == by_hand
    assert s.find("attn").rf == (16, 16)


# --- compare-arch --------------------------------------------------------------------------------


def test_compare_arch_shows_each_stages_channels_and_resolution(capsys):
    # ResNet-18 (He et al. Table 1: conv2_x..conv5_x at 56, 28, 14, 7); DenseNet-121 (Huang et al. Table 1: 112 after
    # the stem, blocks at 56, 28, 14, 7 with 64 + 6*32 = 256, 128 + 12*32 = 512, 256 + 24*32 = 1024, 512 + 16*32 = 1024
    # channels); ViT-B/16: 12 layers of 768-channel tokens on the 224/16 = 14 grid.
    names = ["resnet18", "densenet121", "vit_b_16"]
    assert main(["compare-arch", *names, "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    stages = {r["name"]: [(s["num_chs"], tuple(s["hw"])) for s in r["stages"]] for r in rows}
    assert stages["resnet18"][-4:] == [(64, (56, 56)), (128, (28, 28)), (256, (14, 14)), (512, (7, 7))]
    assert stages["densenet121"] == [(64, (112, 112)), (256, (56, 56)), (512, (28, 28)), (1024, (14, 14)),
                                     (1024, (7, 7))]
    assert stages["vit_b_16"] == [(768, (14, 14))] * 12
    assert rows[2]["macs"] == pytest.approx(17.564e9, rel=1e-4)  # the attention matmuls are in (torchvision)
    assert main(["compare-arch", "resnet18", "vit_b_16", "--width", "250"]) == 0
    out = capsys.readouterr().out
    assert "stages (channels@resolution)" in out and "64@56 128@28 256@14 512@7" in out and "768@14 x12" in out


# the outputs of the papers' tables at 224: MobileNetV2 (Sandler et al. Table 2: bottlenecks of 24, 32, 96 channels
# at 56, 28, 14, the 1x1 conv of 1280 at 7) and ShuffleNet V2 1x (Ma et al. Table 5: stages of 116, 232 channels at 28
# and 14, Conv5 of 1024 at 7)
MOBILE_TABLES = {
    "mobilenet_v2": [(24, (56, 56)), (32, (28, 28)), (96, (14, 14)), (1280, (7, 7))],
    "shufflenet_v2_x1_0": [(116, (28, 28)), (232, (14, 14)), (1024, (7, 7))],
}


def test_compare_arch_across_mobile_networks_shows_the_papers_stages(capsys):
    names = [n for n in MOBILE_TABLES if n in cnnzoo.list_models()]
    if not names:
        pytest.skip("no mobile network is registered yet")
    assert main(["compare-arch", *names, "--format", "json"]) == 0
    for row in json.loads(capsys.readouterr().out):
        stages = [(s["num_chs"], tuple(s["hw"])) for s in row["stages"]]
        table = MOBILE_TABLES[row["name"]]
        assert [st for st in stages if st in table] == table, (row["name"], stages)  # in order, the last one last
        assert stages[-1] == table[-1] and row["total_params"] > 0 and row["macs"] > 0
    assert main(["compare-arch", *names, "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("stages (channels@resolution)") and len(lines) == 1 + len(names)


def test_stages_of_a_module_that_never_ran_is_a_clear_error():
    model = meta(lambda: nn.Sequential(nn.Conv2d(1, 2, 3)))
    with pytest.raises(ValueError, match="did not run"):
        summarize(model, (1, 8, 8)).stages([{"module": "nope", "num_chs": 2, "reduction": 1}])
