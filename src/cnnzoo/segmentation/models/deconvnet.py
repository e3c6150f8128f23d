"""DeconvNet. H. Noh, S. Hong, B. Han, "Learning Deconvolution Network for Semantic Segmentation", ICCV 2015.
https://arxiv.org/abs/1505.04366 -- with the authors' Caffe models (github.com/HyeonwooNoh/DeconvNet).

Key ideas
    FCN's single bilinear upsampling of a coarse stride-32 score map loses detail and mislabels objects much larger
    or smaller than its receptive field (Sec. 1, Fig. 1). DeconvNet learns the upsampling instead: on top of the
    VGG-16 convolutions (fc6/fc7 as 7x7 and 1x1 convolutions, the 7x7 pool5 reduced to a 1x1 x 4096 code) it puts a
    *mirrored* multi-layer deconvolution network (Sec. 3, Fig. 2): a 7x7 deconvolution back to 7x7 x 512, then for
    each pooling an *unpooling* layer that puts each activation back at the location of the maximum that the
    encoder's pooling recorded ("switch variables", Sec. 3.2, Fig. 3) -- a sparse map that keeps the object's
    structure -- followed by deconvolution layers that densify it ("class-specific shapes", Fig. 4). Batch
    normalisation after every convolution and deconvolution makes the deep net trainable (Sec. 4).
    Segmentation is done per object proposal and aggregated over the image (Sec. 3.3, 5).

Which table the code reproduces
    Table 1 (the network configuration) with BN after each convolution / deconvolution (Sec. 4), in the layout of
    the authors' Caffe model: conv1_1 ... conv5_3 (3x3, pad 1) with 2x2/2 max-pools recording switches; fc6 7x7
    (no pad) 512 -> 4096 and fc7 1x1 4096 -> 4096; deconv-fc6 7x7 4096 -> 512 (1x1 -> 7x7); then
        unpool5, deconv5_1 512, deconv5_2 512, deconv5_3 512 | unpool4, deconv4_1 512, deconv4_2 512, deconv4_3 256 |
        unpool3, deconv3_1 256, deconv3_2 256, deconv3_3 128 | unpool2, deconv2_1 128, deconv2_2 64 |
        unpool1, deconv1_1 64, deconv1_2 64 | output: 1x1 convolution 64 -> K (21 PASCAL classes)
    every convolution / deconvolution (but the output) followed by BN + ReLU; every one with a bias (Caffe's
    default); BN has a learned scale and shift (2 per channel; running statistics are buffers). Table 1 has no
    dropout and none is built. Parameters, by hand (tests/test_segmentation_segnet_deconvnet.py), K = 21:
        encoder convs (VGG-16 conv1_1 ... conv5_3, weights + biases)                        14,714,688
        fc6 7x7 512 -> 4096: 4096*512*49 + 4096                                             102,764,544
        fc7 1x1 4096 -> 4096: 4096*4096 + 4096                                               16,781,312
        deconv-fc6 7x7 4096 -> 512: 4096*512*49 + 512                                       102,760,960
        deconv5_* ... deconv1_2 (3x3), weights: 9 * (3*512*512 + 2*512*512 + 512*256 + 2*256*256 + 256*128
            + 128*128 + 128*64 + 2*64*64) = 9 * 1,638,400                                     14,745,600
          their biases: 3*512 + 2*512 + 256 + 2*256 + 128 + 128 + 64 + 2*64 = 3,776              3,776
        output 1x1 64 -> K: 64*K + K = 65 K                                                       1,365
        without BN (the "252M" parameters the paper quotes for it)                         251,772,245
        BN: 2 * (4,224 encoder + 2*4096 fc6/fc7 + 512 deconv-fc6 + 3,776 deconvs) = 2 * 16,704    33,408
        total                                                                              251,805,653

Training setup in the paper
    Sec. 4 and the implementation details of Sec. 6, Caffe: the encoder from the ImageNet VGG-16, the decoder from
    zero-mean Gaussians; SGD with learning rate 0.01, momentum 0.9, weight decay 5e-4, mini-batches of 64;
    *two-stage* training (Sec. 4): first on 250x250 crops around ground-truth objects (the object centred, randomly
    cropped to 224x224), then on harder examples from object proposals that overlap the ground truth. PASCAL VOC
    2012 + Hariharan et al.'s annotations. Inference: ~2000 edge-box proposals per image, the top 50 by
    objectness segmented at 224x224 and aggregated by pixel-wise maximum (Sec. 5); the ensemble with FCN
    (EDeconvNet) and a fully connected CRF add points.

This implementation
    ``deconvnet_vgg16`` is the network of Table 1 applied to a whole image (no proposals, no aggregation, no CRF,
    no FCN ensemble: those are inference procedures around the network). ``features`` is VGG-16 with BN in the
    zoo's ``vgg16_bn`` layout (the same keys and shapes, `segnet.vgg16_bn_encoder`), so ``backbone_weights``
    (anything ``create_model("vgg16_bn", weights=...)`` reads) or `DeconvNet.load_backbone` maps: every encoder
    convolution and its BN (running statistics included), and vgg16_bn's fc6/fc7 (``classifier.0`` / ``.3``)
    converted to the 7x7 / 1x1 convolutions (`fcn.fc_to_conv`). Not mapped: the BN after fc6 and fc7 (vgg16_bn has
    none there: they start at scale 1, shift 0, running mean 0, variance 1), fc8, and the whole decoder.
    Initialisation: Kaiming-normal (fan-out) convolutions and deconvolutions, zero biases, BN 1 / 0.
    Input sizes: pooling rounds up and each unpooling restores the size its pooling saw (as `segnet`), and the
    deconv-fc6 restores pool5's size, so the output has the input's size for every input whose pool5 covers fc6's
    window: at least ``32 * (fc_kernel - 1) + 1`` pixels a side (193 for the paper's 7; the paper's 224 gives a 1x1
    fc7); smaller inputs are refused with that minimum in the message. Nothing is padded.
    Options: ``num_classes`` (21), ``in_channels`` (3), ``backbone_weights``; two deviations for training on 2 CPU
    cores: ``width_mult`` (1.0) scales every width (64 ... 512 and fc 4096; rounded, at least 1), and ``fc_kernel``
    (7) sets fc6's and deconv-fc6's kernel, so that small inputs fit (``fc_kernel=1`` takes any size; a 64x64 canvas
    has a 2x2 pool5, so ``fc_kernel`` <= 2). vgg16_bn checkpoints load only at ``width_mult=1.0`` and
    ``fc_kernel=7``.
    digits-segmentation recipe (`DIGITS_RECIPE`): ``width_mult=0.25``, ``fc_kernel=1``, SegNet's median frequency
    class balancing (``class_weighting: median_frequency``; a deviation: the paper's loss is unweighted, its
    object-centred crops keep the classes balanced), Adam 1e-3, 8 epochs of batch 8. Measured with `SegTrainer`
    (one thread, test split of 200 canvases; seconds are the process's CPU time, what an idle thread takes, on a
    loaded shared machine):
        seed 0: mean IU 0.312, pixel accuracy 0.966, 184 CPU s;  seed 1: mean IU 0.223, pixel accuracy 0.961, 178 CPU s
        (1,000 steps, ~0.18 s each; the test mean IU per epoch fluctuates by a few points near the end: seed 0 read
        0.263, 0.210, 0.312 over epochs 6-8). Rerun on a nearly idle machine: seed 0 again 0.312, 161 s wall (153 CPU
        s) -- the loaded figures above are ~20% high.
    Before: 1/8 width, unweighted, 12 epochs of batch 16: mean IU 0.107 (seed 0, 115 CPU s), only just above
    all-background (0.087); 1/8 width with the weighting: 0.098 after 5 of 12 epochs (stopped).
"""

from __future__ import annotations

import torch
from torch import nn

from ...registry import Paper
from ..registry import register_segmenter
from .base import Segmenter
from .fcn import fc_to_conv
from .segnet import Switches, check_common_options, encode, init_weights, load_features, max_unpool, vgg16_bn_encoder

__all__ = ["DeconvNet", "deconvnet_vgg16"]

DECONVNET = Paper("Learning Deconvolution Network for Semantic Segmentation", "H. Noh, S. Hong, B. Han", 2015,
                  "https://arxiv.org/abs/1505.04366")

FC_WIDTH = 4096  # fc6 / fc7
FC_KERNEL = 7  # fc6: a 7x7 convolution over the 7x7 pool5 of a 224x224 input
# Table 1's deconvolution layers, deepest stage first: each stage unpools, then these 3x3 deconv + BN + ReLU widths.
DECONV_STAGES = [[512, 512, 512], [512, 512, 256], [256, 256, 128], [128, 64], [64, 64]]


def _deconv_bn_relu(in_chs: int, out_chs: int, kernel: int = 3) -> list[nn.Module]:
    # a stride-1 deconvolution (pad 1 for 3x3 keeps the size; 7x7 without pad grows 1x1 -> 7x7)
    return [nn.ConvTranspose2d(in_chs, out_chs, kernel, padding=1 if kernel == 3 else 0), nn.BatchNorm2d(out_chs),
            nn.ReLU(inplace=True)]


class DeconvNet(Segmenter):
    """DeconvNet (Table 1, Fig. 2): VGG-16-BN with fc6/fc7 convolutions, a mirrored unpooling/deconvolution net."""

    def __init__(self, *, num_classes: int = 21, in_channels: int = 3, width_mult: float = 1.0,
                 fc_kernel: int = FC_KERNEL, backbone_weights: str | None = None) -> None:
        super().__init__()
        name = type(self).__name__
        check_common_options(name, num_classes, in_channels, width_mult, backbone_weights)
        if isinstance(fc_kernel, bool) or not isinstance(fc_kernel, int) or fc_kernel < 1:
            raise ValueError(f"{name} option fc_kernel must be an integer >= 1, got {fc_kernel!r}")
        if backbone_weights is not None and fc_kernel != FC_KERNEL:
            raise ValueError(f"{name}: backbone_weights are a vgg16_bn checkpoint, whose fc6 fits only "
                             f"fc_kernel={FC_KERNEL}, got fc_kernel={fc_kernel!r}")
        self.num_classes, self.in_channels, self.fc_kernel = num_classes, in_channels, fc_kernel
        self.min_input_size = 32 * (fc_kernel - 1) + 1  # pool5 = ceil(H / 32) must be >= fc_kernel

        def width(c: int) -> int:
            return max(1, round(c * width_mult))

        self.features = vgg16_bn_encoder(in_channels, width)  # keys as vgg16_bn's features
        c5, fc = width(512), width(FC_WIDTH)
        # fc6 / fc7 as convolutions, each with BN + ReLU: pool5 (B, 512, h, w) -> (B, 4096, h - 6, w - 6)
        self.fc = nn.Sequential(nn.Conv2d(c5, fc, fc_kernel), nn.BatchNorm2d(fc), nn.ReLU(inplace=True),
                                nn.Conv2d(fc, fc, 1), nn.BatchNorm2d(fc), nn.ReLU(inplace=True))
        self.deconv_fc = nn.Sequential(*_deconv_bn_relu(fc, c5, fc_kernel))  # -> (B, 512, h, w)
        stages, chs = [], c5
        for widths in DECONV_STAGES:  # deconv5_* first
            layers: list[nn.Module] = []
            for c in widths:
                layers += _deconv_bn_relu(chs, width(c))
                chs = width(c)
            stages.append(nn.Sequential(*layers))
        self.decoder = nn.ModuleList(stages)
        self.classifier = nn.Conv2d(chs, num_classes, 1)  # Table 1's "output": 1x1, no BN
        init_weights(self)
        if backbone_weights is not None:
            from ...registry import create_model

            self.load_backbone(create_model("vgg16_bn", weights=backbone_weights))

    def load_backbone(self, vgg: nn.Module) -> None:
        """Copy a vgg16_bn's ``features`` (convolutions + BN) and convert its fc6/fc7 (``classifier.0``/``.3``)."""
        if self.fc_kernel != FC_KERNEL:
            raise ValueError(f"vgg16_bn's fc6 reads a 7x7 pool5; this DeconvNet has fc_kernel={self.fc_kernel}")
        classifier = getattr(vgg, "classifier", None)
        if not isinstance(classifier, nn.Sequential) or len(classifier) < 4:
            raise ValueError("the classifier has no VGG head (classifier.0 = fc6, classifier.3 = fc7) to convert")
        fc6 = fc_to_conv(classifier[0], self.fc[0].in_channels, FC_KERNEL)
        fc7 = fc_to_conv(classifier[3], self.fc[3].in_channels, 1)
        if fc6.weight.shape != self.fc[0].weight.shape or fc7.weight.shape != self.fc[3].weight.shape:
            raise ValueError(f"the classifier's fc6/fc7 {tuple(fc6.weight.shape)}/{tuple(fc7.weight.shape)} do not "
                             f"fit this DeconvNet's {tuple(self.fc[0].weight.shape)}/{tuple(self.fc[3].weight.shape)}")
        load_features(self.features, vgg, "DeconvNet")
        with torch.no_grad():
            self.fc[0].load_state_dict(fc6.state_dict())
            self.fc[3].load_state_dict(fc7.state_dict())

    def check_input(self, x: torch.Tensor) -> None:
        try:
            super().check_input(x)
        except ValueError as e:
            if "at least" in str(e):
                raise ValueError(f"{e} (pool5, a 32nd of the input, must cover fc6's {self.fc_kernel}x"
                                 f"{self.fc_kernel} window; build with a smaller fc_kernel for small inputs)") from None
            raise

    def output_size(self, size: int) -> int:
        return size

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[Switches]]:
        """pool5's map ``(B, 512, ceil(H/32), ceil(W/32))`` and the switches of pool1 ... pool5."""
        return encode(self.features, x)

    def decode(self, x: torch.Tensor, switches: list[Switches]) -> torch.Tensor:
        """fc6, fc7, deconv-fc6, then stage i (deepest first) unpools with encoder pool ``5 - i``'s switches."""
        x = self.deconv_fc(self.fc(x))  # (B, 512, h, w) -> (B, 4096, h - 6, w - 6) -> (B, 512, h, w)
        for stage, sw in zip(self.decoder, reversed(switches)):
            x = stage(max_unpool(x, sw))  # (B, C, h, w) -> (B, C, 2h or 2h - 1, ...) -> (B, C', ...)
        return self.classifier(x)  # (B, 64, H, W) -> (B, K, H, W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.decode(*self.encode(x))


_DEVIATIONS = ("whole-image inference: no object proposals, aggregation, FCN ensemble or CRF (Sec. 3.3, 5)",
               ("input sizes that are not multiples of 32 work (ceil pooling, unpooling to the recorded size); inputs "
                "under 32 * (fc_kernel - 1) + 1 pixels are refused"),
               "width_mult < 1 and fc_kernel < 7 shrink the network for CPU training (not in the paper)",
               ("digits recipe: SegNet's median frequency class balancing in the loss (the paper's is unweighted); "
                "with it the digits recipe reaches mean IU 0.312 / 0.223 (seeds 0 / 1); unweighted (1/8 width, 12 "
                "epochs of batch 16) 0.107"))


#: digits-segmentation (64x64, 1 channel, 11 classes; `get_digits_recipe`): 1/4 width and a 1x1 fc6 (a 64x64 canvas
#: has a 2x2 pool5), median frequency class balancing (a deviation), Adam from scratch (measured: module docstring)
DIGITS_RECIPE = {"options": {"width_mult": 0.25, "fc_kernel": 1}, "optimizer": "adam", "lr": 1e-3, "epochs": 8,
                 "batch_size": 8, "class_weighting": "median_frequency"}


@register_segmenter(DeconvNet, paper=DECONVNET, input_size=(3, 224, 224), dataset="PASCAL VOC 2012 segmentation",
                    deviations=_DEVIATIONS, digits_recipe=DIGITS_RECIPE)
def deconvnet_vgg16(**kwargs) -> DeconvNet:
    """DeconvNet on VGG-16-BN (Table 1): fc6/fc7, deconv-fc6, unpooling with switches (251,805,653 parameters)."""
    return DeconvNet(**kwargs)
