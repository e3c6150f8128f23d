"""RefineNet. G. Lin, A. Milan, C. Shen, I. Reid, "RefineNet: Multi-Path Refinement Networks for High-Resolution
Semantic Segmentation", CVPR 2017. https://arxiv.org/abs/1611.06612 -- with the authors' MatConvNet code
(github.com/guosheng/refinenet, ``main/gen_network_refine_group.m``, ``gen_network_pool_block.m``,
``My_net_util.m``, ``gen_net_opts_model_type1.m``) where the paper leaves a detail open.

Key ideas
    Repeated striding loses the fine structure a dense prediction needs; dilated convolutions keep it at a large
    memory cost (DeepLab), deconvolution cannot recover what the strides discarded. RefineNet instead reads a
    ResNet at all four resolutions (res2 ... res5, 1/4 ... 1/32 of the input) and refines coarse, semantic features
    with finer ones through a cascade of RefineNet blocks (Sec. 3.1, Fig. 2(c), "4-cascaded"): RefineNet-4 takes
    res5 alone, RefineNet-3 takes res4 and RefineNet-4's output, ... RefineNet-1 works at 1/4 and feeds the
    classifier. Every block (Sec. 3.2, Fig. 3) is built of residual units with identity shortcuts, so gradients
    reach the ResNet directly ("long-range" and "short-range" residual connections, Sec. 3.3):
    * Residual Conv Unit (RCU, Fig. 3(b)): ReLU-conv3x3-ReLU-conv3x3 plus the identity, a ResNet unit without BN.
      Adaptive convolution: two RCUs on each input path; every path is 512 wide in RefineNet-4, 256 in the others.
    * Multi-resolution fusion (Fig. 3(c)): one 3x3 conv per path to the smallest width among the inputs ("input
      adaptation", also re-scaling each path's values), upsampling of every map to the largest input resolution,
      summation. A block with one input (RefineNet-4) passes it on unchanged.
    * Chained residual pooling (CRP, Fig. 3(d)): a ReLU, then a chain of pooling blocks, each a max-pooling with
      stride 1 (5x5 here) followed by a 3x3 conv that weights it; each block takes the previous block's output, and
      the input and every block's output are summed. Chained poolings reuse each other's results, so the field
      of view grows without large windows; it captures background context.
    * An output RCU, so three RCUs lie between the CRP of one block and the fusion of the next; before the dense
      soft-max two more RCUs follow RefineNet-1. The 1/4 score map is upsampled bilinearly to the image.

Which table the code reproduces
    The 4-cascaded RefineNet on ResNet-101 (Fig. 2(c) with the block of Fig. 3) of the paper's main results, for
    21 PASCAL VOC classes. Names below: ``C`` = ``refine_channels`` (256), RefineNet-4 at ``2C`` (512).
        reduce.{0..3}  3x3 conv (no bias) res2/res3/res4 -> C, res5 -> 2C: a ResNet map is 256-2048 wide and an RCU
                       keeps its width, so each path is first brought to its width, as the authors' code does
                       (their ``*_dimred`` layer ahead of each path's RCUs)
        refine4        adapt: 2 RCU(2C) | no fusion (one input) | CRP(2C) | output RCU(2C)
        refine3        adapt: 2 RCU(C) on res4, 2 RCU(2C) on refine4 | fusion 3x3 C -> C and 2C -> C | CRP(C) | RCU(C)
        refine2/1      adapt: 2 RCU(C) on each of its two paths | fusion 3x3 C -> C twice | CRP(C) | RCU(C)
        head           2 RCU(C), 1x1 conv C -> K (the "dense soft-max layer"), bilinear upsampling x4 to the input
    Each RCU: conv1 3x3 with bias, conv2 3x3 without (the authors' code); fusion and CRP convs have no bias.
    Parameters, by hand (tests/test_segmentation_refinenet.py), C = 256, 2 CRP blocks, K classes:
        RCU(c) = (9c^2 + c) + 9c^2: RCU(512) = 4,719,104, RCU(256) = 1,179,904; conv3x3(a -> b) = 9ab
        reduce: 9 * (2048*512 + 1024*256 + 512*256 + 256*256)                                        13,565,952
        refine4: 3 RCU(512) + CRP 2 * 9 * 512^2 = 14,157,312 + 4,718,592                            18,875,904
        refine3: 2 RCU(256) + 2 RCU(512) + 9 * (256^2 + 512*256) + 2 * 9 * 256^2 + RCU(256)            15,927,040
        refine2, refine1: 4 RCU(256) + 2 * 9 * 256^2 + 2 * 9 * 256^2 + RCU(256) = 8,258,816 each       16,517,632
        head: 2 RCU(256) + 257 K                                                                2,359,808 + 257 K
        ResNet-101 without fc: 44,549,160 - (2048 * 1000 + 1000)                                     42,500,160
        total                                                                     109,746,496 + 257 K
    109,751,893 for K = 21 (on ResNet-50: 23,508,032 + 67,246,336 + 257 K = 90,759,765 for K = 21).

Training setup in the paper
    Sec. 4: MatConvNet, ImageNet-pretrained ResNets, data augmentation by random scaling (0.7-1.3), random crops
    and horizontal flips, multi-scale evaluation. The authors' code adds what the text leaves out: SGD with
    momentum 0.9 and weight decay 0.0005, learning rate 5e-4 (the backbone at 0.1 of it) with a batch of one image,
    lowered 10x once the validation score is stable; 400 x 400 crops for VOC. Datasets: PASCAL VOC 2012,
    PASCAL-Context, Cityscapes, NYUDv2, SUN-RGBD, ADE20K, Person-Parts; the abstract's headline is 83.4 mean IoU on
    the VOC 2012 test set.

This implementation
    ``refinenet_resnet101``: ``backbone`` is a zoo network through the features API
    (``features_only_model``: keys as the network's own, ``backbone.layer1...``, its classifier dropped); the maps
    taken are the last stage at each reduction 4, 8, 16, 32 of its ``feature_info`` (res2 ... res5 for a ResNet).
    Input sizes: every size the backbone takes (a ResNet: at least 1 x 1); the fusion upsamples each coarser map to
    the exact size of the finer one (sizes not divisible by 32 give ceil-rounded maps that do not halve exactly)
    and the scores are resized to the input, so the output always has the input's size.
    Choices where the paper is silent, taken from the authors' code: the 3x3 dimension-reducing conv on each
    ResNet map (above); biases (RCU: first conv only; none in fusion and CRP); 2 CRP blocks (their default
    ``chained_pool_num = 2``, as Fig. 3 draws; their code allows 4, later RefineNet code uses 4: ``crp_blocks``);
    5x5 pooling windows; initialisation N(0, 0.01) for every new conv, zero biases (the backbone keeps the zoo's
    ResNet initialisation); bilinear resizing (``align_corners=False``).
    Deviations from the authors' code, where it departs from the paper's text: their "improved" CRP convolves
    *before* each pooling, this one pools first as Fig. 3(d); they put three RCUs after the CRP and none on the
    incoming coarse path, this one two on the path (adaptive convolution) and one after the CRP as Sec. 3.2 (the
    same chain of three RCUs between two CRPs, the same parameters); their classifier is dropout 0.5 + a 3x3 conv,
    here a 1x1 conv without dropout; their ResNet input is scaled by 1.2.
    Options: ``num_classes`` (21), ``in_channels`` (3), ``backbone`` (``"resnet101"``, the paper's; ``"resnet50"``
    and ``"resnet152"`` as the paper's other variants, or any zoo network with maps at reductions 4, 8, 16 and 32),
    ``backbone_weights`` (anything ``create_model(backbone, weights=...)`` reads), ``refine_channels`` (256: the
    width of RefineNet-3..1, RefineNet-4 at twice it; smaller for CPU training, a deviation), ``crp_blocks`` (2).
    ``create_segmenter(name, weights=FILE)`` derives ``num_classes``, ``in_channels``, ``refine_channels``,
    ``crp_blocks`` and, for the ResNets of the zoo, ``backbone`` from the file.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from ...registry import Paper
from ..registry import register_segmenter
from .base import Segmenter

__all__ = ["RCU", "ChainedResidualPooling", "MultiResolutionFusion", "RefineNet", "RefineNetBlock",
           "refinenet_resnet101"]

REFINENET = Paper("RefineNet: Multi-Path Refinement Networks for High-Resolution Semantic Segmentation",
                  "G. Lin, A. Milan, C. Shen, I. Reid", 2017, "https://arxiv.org/abs/1611.06612")

#: the backbone maps RefineNet reads (res2 ... res5): their reductions, finest first
REDUCTIONS = (4, 8, 16, 32)
POOL_SIZE = 5  # the CRP's max-pooling window (stride 1, padding 2: the map keeps its size)


def conv3x3(in_channels: int, out_channels: int, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=bias)


class RCU(nn.Module):
    """Residual Conv Unit (Fig. 3(b)): ``x + conv2(relu(conv1(relu(x))))``, 3x3 convolutions, no BN."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = conv3x3(channels, channels, bias=True)
        self.conv2 = conv3x3(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))  # (B, C, H, W) -> (B, C, H, W)


class MultiResolutionFusion(nn.Module):
    """Multi-resolution fusion (Fig. 3(c)): a 3x3 conv per path to ``out_channels``, each map upsampled
    (bilinearly) to the largest height and width among the paths, then summed. With one path: the identity."""

    def __init__(self, in_channels: tuple[int, ...], out_channels: int) -> None:
        super().__init__()
        if len(in_channels) == 1 and in_channels[0] != out_channels:
            raise ValueError(f"a single path passes unchanged: its width {in_channels[0]} must be {out_channels}")
        self.convs = nn.ModuleList([conv3x3(c, out_channels) for c in in_channels] if len(in_channels) > 1 else [])

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        if not self.convs:
            return xs[0]
        size = (max(x.shape[-2] for x in xs), max(x.shape[-1] for x in xs))
        out = None
        for conv, x in zip(self.convs, xs):
            y = conv(x)  # (B, C_i, h_i, w_i) -> (B, C, h_i, w_i)
            if tuple(y.shape[-2:]) != size:
                y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)  # -> (B, C, H, W)
            out = y if out is None else out + y
        return out


class ChainedResidualPooling(nn.Module):
    """Chained residual pooling (Fig. 3(d)): ``x = relu(x)``; block k: ``p_k = conv_k(maxpool5x5/1(p_{k-1}))``
    with ``p_0 = x``; output ``x + p_1 + ... + p_n``."""

    def __init__(self, channels: int, blocks: int = 2) -> None:
        super().__init__()
        self.pool = nn.MaxPool2d(POOL_SIZE, stride=1, padding=POOL_SIZE // 2)
        self.convs = nn.ModuleList([conv3x3(channels, channels) for _ in range(blocks)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        out, path = x, x
        for conv in self.convs:
            path = conv(self.pool(path))  # (B, C, H, W) -> (B, C, H, W)
            out = out + path
        return out


class RefineNetBlock(nn.Module):
    """One RefineNet block (Fig. 3(a)): two RCUs on each input path, multi-resolution fusion to ``out_channels``,
    chained residual pooling, an output RCU. ``in_channels``: the width of each input path, finest first."""

    def __init__(self, in_channels: tuple[int, ...], out_channels: int, crp_blocks: int = 2) -> None:
        super().__init__()
        self.adapt = nn.ModuleList([nn.Sequential(RCU(c), RCU(c)) for c in in_channels])
        self.fusion = MultiResolutionFusion(tuple(in_channels), out_channels)
        self.crp = ChainedResidualPooling(out_channels, crp_blocks)
        self.output = RCU(out_channels)

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        xs = [adapt(x) for adapt, x in zip(self.adapt, xs)]
        return self.output(self.crp(self.fusion(xs)))  # (B, out_channels, H_finest, W_finest)


def _positive_int(name: str, key: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} option {key} must be an integer >= 1, got {value!r}")


def _resnet_from_keys(sd: dict[str, torch.Tensor]) -> str | None:
    """The zoo ResNet whose block counts the ``backbone.layerN.M`` keys show (None if they match none)."""
    blocks = {}
    for k in sd:
        m = re.match(r"backbone\.layer([1-4])\.(\d+)\.", k)
        if m:
            blocks[int(m[1])] = max(blocks.get(int(m[1]), 0), int(m[2]) + 1)
    bottleneck = any(re.match(r"backbone\.layer1\.0\.conv3\.", k) for k in sd)
    counts = tuple(blocks.get(i, 0) for i in (1, 2, 3, 4))
    known = {(True, (3, 4, 6, 3)): "resnet50", (True, (3, 4, 23, 3)): "resnet101", (True, (3, 8, 36, 3)): "resnet152",
             (False, (2, 2, 2, 2)): "resnet18", (False, (3, 4, 6, 3)): "resnet34"}
    return known.get((bottleneck, counts))


class RefineNet(Segmenter):
    """The 4-cascaded RefineNet (Fig. 2(c)) on a zoo backbone's maps at 1/4 ... 1/32. See the module notes."""

    def __init__(self, *, num_classes: int = 21, in_channels: int = 3, backbone: str = "resnet101",
                 backbone_weights: str | None = None, refine_channels: int = 256, crp_blocks: int = 2) -> None:
        super().__init__()
        name = type(self).__name__
        for key, value in (("num_classes", num_classes), ("in_channels", in_channels),
                           ("refine_channels", refine_channels), ("crp_blocks", crp_blocks)):
            _positive_int(name, key, value)
        if not isinstance(backbone, str):
            raise ValueError(f"{name} option backbone must be the name of a zoo network, got {backbone!r}")
        from ...models.features import features_only_model
        from ...registry import create_model

        net = create_model(backbone, in_channels=in_channels, weights=backbone_weights)
        infos = getattr(net, "feature_info", None) or []
        take = []
        for r in REDUCTIONS:  # the last stage at each reduction: res2 ... res5 of a ResNet
            at_r = [i for i, info in enumerate(infos) if info["reduction"] == r]
            if not at_r:
                have = sorted({info["reduction"] for info in infos})
                raise ValueError(f"{name} needs backbone maps at reductions {', '.join(map(str, REDUCTIONS))}, but "
                                 f"{backbone} has {', '.join(map(str, have)) or 'no maps'}; use a network with four "
                                 f"such stages (resnet50, resnet101, ...) at output stride 32")
            take.append(at_r[-1])
        self.backbone = features_only_model(net, take)
        self.num_classes, self.in_channels = num_classes, in_channels
        self.min_input_size = net.min_input_size
        c = refine_channels
        widths = (c, c, c, 2 * c)  # Sec. 3.2: 512 for RefineNet-4, 256 for the others
        self.reduce = nn.ModuleList([conv3x3(ch, w) for ch, w in zip(self.backbone.feature_info.channels(), widths)])
        self.refine4 = RefineNetBlock((2 * c,), 2 * c, crp_blocks)
        self.refine3 = RefineNetBlock((c, 2 * c), c, crp_blocks)
        self.refine2 = RefineNetBlock((c, c), c, crp_blocks)
        self.refine1 = RefineNetBlock((c, c), c, crp_blocks)
        self.head = nn.Sequential(RCU(c), RCU(c))  # Sec. 3.2: two more RCUs before the dense soft-max
        self.classifier = nn.Conv2d(c, num_classes, 1)
        for module in (self.reduce, self.refine4, self.refine3, self.refine2, self.refine1, self.head,
                       self.classifier):
            for m in module.modules():
                if isinstance(m, nn.Conv2d):  # the authors' code: N(0, 0.01), zero biases
                    nn.init.normal_(m.weight, std=0.01)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)

    @staticmethod
    def options_from_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, object]:
        """The options a checkpoint of this layout needs: ``num_classes``, ``in_channels``, ``refine_channels``,
        ``crp_blocks``, and ``backbone`` when its keys are one of the zoo's ResNets."""
        opts: dict[str, object] = {}
        for key, option, dim in (("classifier.weight", "num_classes", 0), ("backbone.conv1.weight", "in_channels", 1),
                                 ("reduce.0.weight", "refine_channels", 0)):
            t = sd.get(key)
            if isinstance(t, torch.Tensor) and t.ndim == 4:
                opts[option] = int(t.shape[dim])
        crp = [k for k in sd if re.fullmatch(r"refine1\.crp\.convs\.\d+\.weight", k)]
        if crp:
            opts["crp_blocks"] = len(crp)
        resnet = _resnet_from_keys(sd)
        if resnet is not None:
            opts["backbone"] = resnet
        return opts

    def output_size(self, size: int) -> int:
        return size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        feats = self.backbone(x)  # res2 .. res5: (B, C_r, H/r, W/r) for r = 4, 8, 16, 32 (rounded up)
        r2, r3, r4, r5 = (reduce(f) for reduce, f in zip(self.reduce, feats))
        y = self.refine4([r5])  # (B, 2C, H/32, W/32)
        y = self.refine3([r4, y])  # (B, C, H/16, W/16)
        y = self.refine2([r3, y])  # (B, C, H/8, W/8)
        y = self.refine1([r2, y])  # (B, C, H/4, W/4)
        y = self.classifier(self.head(y))  # (B, K, H/4, W/4)
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)  # (B, K, H, W)


_DEVIATIONS = (
    ("a 3x3 conv (no bias) brings each ResNet map to its path's width before the RCUs, biases on the first conv of "
     "each RCU only, N(0, 0.01) initialisation: the authors' code, the paper is silent"),
    "chained residual pooling with 2 blocks (crp_blocks; Fig. 3 and the authors' default), pooling before each conv",
    "classifier: a 1x1 conv without dropout (the authors' code: dropout 0.5 and a 3x3 conv)",
    "the input is not rescaled by 1.2 before the ResNet (the authors' code scales it)",
    "refine_channels < 256 shrinks RefineNet's widths for CPU training (not in the paper)",
)

# digits-segmentation (64 x 64, 1,000 train / 200 test canvases): a ResNet-18 backbone and refine_channels=32
# (RefineNet-4 at 64), 12,433,995 parameters. Measured on 1 thread (seed 0, the images scaled to (x/255 - 0.13)/0.31):
# mean IU 0.087 (all background) after epoch 1, 0.314 after 4, 0.671 after 8 (pixel accuracy 0.986; seed 1: 0.657
# and 0.987); about 35 s an epoch on an idle core. Scores at 1/4 resolution limit the thin strokes.
DIGITS_RECIPE = {"options": {"backbone": "resnet18", "refine_channels": 32}, "optimizer": "adam", "lr": 1e-3,
                 "epochs": 8, "batch_size": 16}


@register_segmenter(RefineNet, paper=REFINENET, input_size=(3, 400, 400),
                    dataset="PASCAL VOC 2012 (21 classes)", deviations=_DEVIATIONS, digits_recipe=DIGITS_RECIPE)
def refinenet_resnet101(**kwargs) -> RefineNet:
    """4-cascaded RefineNet on ResNet-101: RCUs, multi-resolution fusion, chained residual pooling; scores at 1/4."""
    return RefineNet(**kwargs)
