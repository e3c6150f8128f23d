"""ShuffleNet v1 (Zhang et al. 2018) and v2 (Ma et al. 2018): channel shuffle, the units, Tables 1 and 5, training."""

from __future__ import annotations

import json

import pytest
import torch

import cnnzoo
from cnnzoo.analysis import summarize
from cnnzoo.cli.main import main
from cnnzoo.layers import ChannelShuffle, channel_shuffle
from cnnzoo.models.shufflenet_v1 import ShuffleUnit
from cnnzoo.models.shufflenet_v2 import ShuffleV2Block
from macs_by_hand import SHUFFLENET_V1_CHANNELS, shufflenet_v1_macs
from test_model_init import check_model


def _build(name: str, **opts):
    with torch.device("meta"):
        return cnnzoo.create_model(name, **opts)


# --- channel shuffle (v1 Sec. 3.1, Fig. 1c) -------------------------------------------------------------------------


def test_channel_shuffle_interleaves_the_groups():
    x = torch.arange(6.0).view(1, 6, 1, 1)  # groups of 2: [0 1 2] [3 4 5]
    assert channel_shuffle(x, 2).flatten().tolist() == [0, 3, 1, 4, 2, 5]
    y = torch.arange(12.0).view(1, 12, 1, 1)  # 3 groups of 4: channel j of group i goes to j * 3 + i
    assert channel_shuffle(y, 3).flatten().tolist() == [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]


def test_channel_shuffle_is_a_permutation_undone_by_c_over_g_groups():
    x = torch.randn(2, 12, 3, 4)
    for g in (1, 2, 3, 4, 6, 12):
        y = channel_shuffle(x, g)
        assert torch.equal(channel_shuffle(y, 12 // g), x)
        assert torch.equal(y.sort(1).values, x.sort(1).values)
    assert torch.equal(ChannelShuffle(3)(x), channel_shuffle(x, 3))


def test_channel_shuffle_bad_groups_are_clear_errors():
    with pytest.raises(ValueError, match="divisible"):
        channel_shuffle(torch.randn(1, 10, 2, 2), 3)
    with pytest.raises(ValueError, match="groups"):
        ChannelShuffle(0)


# --- ShuffleNet v1 --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("g", [1, 2, 3, 4, 8])
def test_v1_table_1(g):
    model = _build(f"shufflenet_v1_g{g}")
    assert model.conv1[0].out_channels == 24 and model.conv1[0].stride == (2, 2)
    stages = [model.stage2, model.stage3, model.stage4]
    assert [len(s) for s in stages] == [4, 8, 4]  # 1 + 3, 1 + 7, 1 + 3 units
    assert [s[-1].conv3.out_channels for s in stages] == list(SHUFFLENET_V1_CHANNELS[g])
    for i, stage in enumerate(stages):
        assert [u.stride for u in stage] == [2] + [1] * (len(stage) - 1)
        for j, unit in enumerate(stage):
            out = SHUFFLENET_V1_CHANNELS[g][i]
            assert unit.conv1.out_channels == out // 4  # Sec. 3.3: bottleneck = 1/4 of the output
            assert unit.conv2.groups == out // 4  # 3x3 depthwise
            assert unit.conv3.groups == g
            # Sec. 3.3: Stage 2's first pointwise layer is not grouped
            assert unit.conv1.groups == (1 if i == 0 and j == 0 else g)
    # Fig. 2c: a stride-2 unit's branch makes out - in channels, the average-pooled input the rest
    assert model.stage3[0].conv3.out_channels == SHUFFLENET_V1_CHANNELS[g][1] - SHUFFLENET_V1_CHANNELS[g][0]


@pytest.mark.parametrize("g", [1, 2, 3, 4, 8])
def test_v1_macs_match_the_hand_count(g):
    """Table 1's designs all cost about 140 MFLOPs (Table 2); conv + fc by hand, from Table 1 and Fig. 2."""
    macs = summarize(_build(f"shufflenet_v1_g{g}"), (3, 224, 224)).macs
    assert macs == shufflenet_v1_macs(g)
    assert 130e6 < macs < 145e6


def test_v1_stride_2_unit_concatenates_the_average_pooled_input():
    torch.manual_seed(0)
    unit = ShuffleUnit(12, 36, groups=3, stride=2).eval()
    x = torch.randn(2, 12, 8, 8)
    y = unit(x)
    assert y.shape == (2, 36, 4, 4)
    pooled = torch.nn.functional.avg_pool2d(x, 3, 2, 1)
    torch.testing.assert_close(y[:, :12], torch.relu(pooled))  # ReLU after the concat (Fig. 2c)
    one = ShuffleUnit(36, 36, groups=3, stride=1).eval()
    z = torch.randn(2, 36, 4, 4)
    branch = one.bn3(one.conv3(one.bn2(one.conv2(one.shuffle(torch.relu(one.bn1(one.conv1(z))))))))
    torch.testing.assert_close(one(z), torch.relu(z + branch))  # Fig. 2b: add, then ReLU


def test_v1_width_mult():
    """"ShuffleNet s x" scales the number of filters by s (Table 2); 0.5x and 2x of g = 3 keep Table 1's ratios."""
    half, double = _build("shufflenet_v1_g3", width_mult=0.5), _build("shufflenet_v1_g3", width_mult=2.0)
    assert [i["num_chs"] for i in half.feature_info] == [12, 120, 240, 480]
    assert [i["num_chs"] for i in double.feature_info] == [48, 480, 960, 1920]
    # g = 8 at 0.25x: 96 stage-2 channels; conv1 rounded to 8 so that 96 - conv1 splits into 8 groups
    tiny = _build("shufflenet_v1_g8", width_mult=0.25)
    assert tiny.stage2[0].conv3.out_channels % 8 == 0 and tiny.feature_info[1]["num_chs"] == 96


# --- ShuffleNet v2 --------------------------------------------------------------------------------------------------

TABLE5 = {"x0_5": (48, 96, 192, 1024), "x1_0": (116, 232, 464, 1024), "x1_5": (176, 352, 704, 1024),
          "x2_0": (244, 488, 976, 2048)}


@pytest.mark.parametrize("width", sorted(TABLE5))
def test_v2_table_5(width):
    model = _build(f"shufflenet_v2_{width}")
    assert model.conv1[0].out_channels == 24
    stages = [model.stage2, model.stage3, model.stage4]
    assert [len(s) for s in stages] == [4, 8, 4]
    outs = [2 * s[-1].branch2[-3].out_channels for s in stages] + [model.conv5[0].out_channels]
    assert tuple(outs) == TABLE5[width]
    for s in stages:  # G2: no group convolution but the depthwise ones
        assert all(c.groups in (1, c.in_channels) for c in s.modules() if isinstance(c, torch.nn.Conv2d))


def test_v2_unit_channel_split_passes_half_the_channels_through():
    """Fig. 3c: one half is kept, the other half goes through the branch; concat, then shuffle with 2 groups."""
    torch.manual_seed(0)
    block = ShuffleV2Block(16, 16, stride=1).eval()
    x = torch.randn(2, 16, 6, 6)
    with torch.no_grad():
        y = channel_shuffle(block(x), 8)  # undo the 2-group shuffle
        torch.testing.assert_close(y[:, :8], x[:, :8])
        torch.testing.assert_close(y[:, 8:], block.branch2(x[:, 8:]))
    down = ShuffleV2Block(16, 32, stride=2)  # Fig. 3d: no split, both branches see all 16 channels
    assert down.branch1[0].in_channels == 16 and down.branch2[0].in_channels == 16
    assert down(x).shape == (2, 32, 3, 3)


@pytest.mark.parametrize("opts,match", [
    ({"stages_repeats": (4, 8)}, "stages_repeats"),
    ({"stage_out_channels": (24, 49, 96, 192, 1024)}, "even"),
    ({"drop_rate": -0.1}, "drop_rate"),
])
def test_v2_bad_options(opts, match):
    with pytest.raises(ValueError, match=match):
        cnnzoo.create_model("shufflenet_v2_x1_0", **opts)


@pytest.mark.parametrize("opts,match", [({"groups": 5}, "groups"), ({"width_mult": 0}, "width_mult")])
def test_v1_bad_options(opts, match):
    with pytest.raises(ValueError, match=match):
        cnnzoo.create_model("shufflenet_v1_g3", **opts)


def test_init():
    """v1 (no reference library): He fan-out convs as the zoo's residual families, BN (1, 0), default fc;
    v2: PyTorch's defaults, as torchvision."""
    torch.manual_seed(0)
    check_model(cnnzoo.create_model("shufflenet_v1_g3", width_mult=0.5), conv="he_fan_out", conv_bias=None,
                linear="torch", linear_bias="torch")
    check_model(cnnzoo.create_model("shufflenet_v2_x0_5"), conv="torch", conv_bias=None, linear="torch",
                linear_bias="torch")


def test_train_shufflenet_end_to_end(tmp_path):
    """`cnnzoo train shufflenet_v1_g3 --data mnist5k` runs a short epoch, evaluates and records the run."""
    run = tmp_path / "run"
    assert main(["train", "shufflenet_v1_g3", "--data", "mnist5k", "--epochs", "1", "--limit-batches", "5",
                 "--set", "data.input_size=32", "--set", "data.num_workers=0", "--run-dir", str(run),
                 "--no-download", "-q"]) == 0
    metrics = json.loads((run / "eval.json").read_text())
    assert metrics["count"] == 1000 and 0.0 <= metrics["top1"] <= 1.0
