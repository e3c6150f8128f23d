"""U-Net (Ronneberger et al. 2015): the paper's layout and count, crop-and-concatenate, the padded variant, the
segmentation registry, and the weight map of Eq. 2."""

import math

import pytest
import torch
from torch import nn

from cnnzoo.registry import UnknownModelError, UnknownOptionError
from cnnzoo.segmentation.losses import unet_weight_map, weighted_cross_entropy
from cnnzoo.segmentation.models.unet import center_crop
from cnnzoo.segmentation.registry import create_segmenter, get_segmenter_card, list_segmenters


def test_paper_layout_count_and_572_to_388():
    with torch.device("meta"):
        net = create_segmenter("unet")
        out = net(torch.empty(1, 1, 572, 572))
    assert sum(p.numel() for p in net.parameters()) == 31_030_658  # issue 25, Fig. 1 with biases
    assert tuple(out.shape) == (1, 2, 388, 388)  # Sec. 2 / Fig. 1: 572 x 572 tile -> 388 x 388 map
    convs = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert len(convs) == 23  # Sec. 2: "In total the network has 23 convolutional layers"
    assert [c.out_channels for c in convs[:10:2]] == [64, 128, 256, 512, 1024]
    assert all(c.padding == (0, 0) for c in convs)  # valid convolutions only
    assert net.output_size(572) == 388


def test_center_crop_hand_cases():
    x = torch.arange(25).reshape(1, 1, 5, 5)
    assert center_crop(x, 3, 3)[0, 0].tolist() == [[6, 7, 8], [11, 12, 13], [16, 17, 18]]
    # odd difference (5 - 2 = 3): the window starts at floor(3 / 2) = 1
    assert center_crop(x, 2, 2)[0, 0].tolist() == [[6, 7], [11, 12]]
    assert center_crop(x, 2, 5)[0, 0].tolist() == [[5, 6, 7, 8, 9], [10, 11, 12, 13, 14]]
    with pytest.raises(ValueError, match="cannot crop a 5x5 map to 6x5"):
        center_crop(x, 6, 5)


def test_skip_is_centre_cropped_and_concatenated_first():
    torch.manual_seed(0)
    net = create_segmenter("unet", base_channels=2, depth=1)  # 1 pooling: x -> x-4 -> /2 -> -4 -> *2 -> -4
    seen = {}
    net.up[0].conv[0].register_forward_hook(lambda m, inp, out: seen.update(x=inp[0]))
    x = torch.randn(1, 1, 23, 23)  # level-0 map 19 x 19 (odd), pooled 9, bottom 5, upsampled 10
    skip = net.down[0](x)
    out = net(x)
    assert skip.shape[-1] == 19 and seen["x"].shape == (1, 4, 10, 10) and out.shape[-1] == 6
    assert torch.equal(seen["x"][:, :2], skip[..., 4:14, 4:14])  # floor((19 - 10) / 2) = 4
    assert net.output_size(23) == 6


def test_padded_variant_keeps_the_size_and_options_apply():
    net = create_segmenter("unet_padded", in_channels=3, num_classes=11, base_channels=4)
    for h, w in ((16, 16), (37, 50), (64, 64)):
        assert net(torch.randn(2, 3, h, w)).shape == (2, 11, h, w)
    with pytest.raises(ValueError, match="at least 16x16"):
        net(torch.randn(1, 3, 15, 40))
    with pytest.raises(ValueError, match="built for 3 input channel"):
        net(torch.randn(1, 1, 32, 32))
    valid = create_segmenter("unet", base_channels=4)
    with pytest.raises(ValueError, match=f"at least {valid.min_input_size}x"):
        valid(torch.randn(1, 1, valid.min_input_size - 1, valid.min_input_size - 1))
    assert valid(torch.randn(1, 1, valid.min_input_size, valid.min_input_size)).shape[-1] >= 1


def test_segmentation_registry_is_its_own():
    assert {"unet", "unet_padded"} <= set(list_segmenters())
    card = get_segmenter_card("unet")
    assert card.paper.year == 2015 and "Key ideas" in card.notes and "This implementation" in card.notes
    assert "Which table the code reproduces" in card.notes and "Training setup in the paper" in card.notes
    with pytest.raises(UnknownOptionError, match="unknown option.*base_width.*valid:.*base_channels"):
        create_segmenter("unet", base_width=16)
    with pytest.raises(UnknownModelError, match="Did you mean: unet"):
        create_segmenter("unett")
    with pytest.raises(ValueError, match="padded must be true/false"):
        create_segmenter("unet", padded="yes")


# ----------------------------------------------------------------------------------------- Eq. 2 weight map
# Two 2 x 2 objects of class 1 separated by a one-pixel gap (column 3), on a 4 x 7 mask:
MASK = torch.tensor([[0, 0, 0, 0, 0, 0, 0],
                     [0, 1, 1, 0, 1, 1, 0],
                     [0, 1, 1, 0, 1, 1, 0],
                     [0, 0, 0, 0, 0, 0, 0]])


def _eq2(d1, d2, wc=1.0, w0=10.0, sigma=5.0):
    return wc + w0 * math.exp(-((d1 + d2) ** 2) / (2 * sigma**2))


def test_weight_map_hand_case_gap_between_two_objects():
    w = unet_weight_map(MASK, class_weights=None)
    assert w[1, 3].item() == pytest.approx(_eq2(1, 1), rel=1e-6)  # in the gap: 1 px to each object -> 10.23
    assert w[0, 0].item() == pytest.approx(_eq2(math.sqrt(2), math.sqrt(17)), rel=1e-6)  # (1,1) and (1,4)
    assert w[3, 6].item() == pytest.approx(_eq2(math.sqrt(2), math.sqrt(17)), rel=1e-6)  # mirror: (2,5), (2,2)
    assert w[1, 1].item() == 1.0 and w[2, 5].item() == 1.0  # object pixels: w_c only
    assert w[1, 3] > 10.0 and w[1, 3] == w.max()
    # one object: no second distance, no border term
    single = MASK.clone()
    single[:, 4:] = 0
    assert torch.equal(unet_weight_map(single, class_weights=None), torch.ones(4, 7))


def test_weight_map_class_balance_and_ignore():
    # balanced: N = 28 labelled pixels, K = 2 classes, 20 background and 8 object pixels
    w = unet_weight_map(MASK)
    assert w[1, 1].item() == pytest.approx(28 / (2 * 8))
    assert w[1, 3].item() == pytest.approx(_eq2(1, 1, wc=28 / (2 * 20)), rel=1e-6)
    ignored = MASK.clone()
    ignored[0, 0] = 255  # now 27 labelled, 19 background
    w = unet_weight_map(ignored)
    assert w[0, 0].item() == 0.0 and w[3, 0].item() == pytest.approx(27 / (2 * 19) + 10 * math.exp(
        -((math.sqrt(2) + math.sqrt(17)) ** 2) / 50), rel=1e-6)


def test_weighted_cross_entropy_weights_each_pixel():
    logits = torch.zeros(1, 2, 1, 3)  # uniform: every labelled pixel costs log 2
    target = torch.tensor([[[0, 1, 255]]])
    weights = torch.tensor([[[1.0, 3.0, 5.0]]])
    assert weighted_cross_entropy(logits, target, weights).item() == pytest.approx((1 + 3) * math.log(2) / 2)
