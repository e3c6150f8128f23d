"""cnnzoo.explain.attribution: CAM, Grad-CAM, Grad-CAM++, guided backprop, guided Grad-CAM, occlusion, sanity check.

Expected values come from the papers' equations worked by hand on hand-built networks, from captum 0.9 (an
independent implementation of Grad-CAM, guided backprop and guided Grad-CAM), and from measured figures (the sanity
check on a briefly trained lenet5).
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cnnzoo
from cnnzoo.explain import (
    METHODS,
    class_activation_map,
    explain,
    grad_cam,
    grad_cam_pp,
    guided_backprop,
    guided_grad_cam,
    occlusion,
    resolve_layer,
    sanity_check,
    spearman,
)


class QuadrantMask(nn.Module):
    """Zeroes everything outside the top-left quadrant of the map."""

    def forward(self, x):
        mask = torch.zeros_like(x)
        mask[..., : x.shape[-2] // 2, : x.shape[-1] // 2] = 1
        return x * mask


class QuadrantNet(nn.Module):
    """A network that looks only at the top-left quadrant of an 8x8 input: identity 1x1 conv, ReLU, the mask, global
    average pooling, and a linear layer with logits z0 = 32 s, z1 = 5 (s the pooled value)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 1, 1), nn.ReLU(), QuadrantMask())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(1, 2)
        with torch.no_grad():
            self.features[0].weight.fill_(1.0)
            self.features[0].bias.zero_()
            self.fc.weight.copy_(torch.tensor([[32.0], [0.0]]))
            self.fc.bias.copy_(torch.tensor([0.0, 5.0]))
        self.feature_info = [{"num_chs": 1, "reduction": 1, "module": "features.2"}]

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


def _quadrant(value: torch.Tensor) -> torch.Tensor:
    """An 8x8 map equal to ``value`` in the top-left 4x4 quadrant and 0 elsewhere."""
    out = torch.zeros(value.shape[0], 8, 8)
    out[:, :4, :4] = value[:, :4, :4]
    return out


# ----------------------------------------------------------------------------------------------- CAM and Grad-CAM
# Selvaraju et al. 2017, Sec. 3.1: with global average pooling + one linear layer, y^c = sum_k w_k^c (1/Z) sum_ij
# A^k_ij + b_c, so dy^c/dA^k_ij = w_k^c / Z and Eq. 1 gives alpha_k^c = (1/Z) sum_ij w_k^c / Z = w_k^c / Z. Eq. 2:
# Grad-CAM = ReLU(sum_k w_k^c A^k / Z) = ReLU(CAM) / Z exactly, Z = h w the map's size (Zhou et al. 2016 Eq. 2's CAM).


def test_cam_equals_gradcam_over_map_size_on_resnet18():
    model = cnnzoo.create_model("resnet18")
    x = torch.randn(1, 3, 64, 64)
    for target in (0, 7, 999):
        cam = class_activation_map(model, x, target)
        gc = grad_cam(model, x, target)
        assert cam.shape == gc.shape == (1, 2, 2)  # layer4 at stride 32: Z = 4
        torch.testing.assert_close(gc, F.relu(cam) / 4, rtol=1e-5, atol=1e-6 * float(cam.abs().max()))
        assert cam.abs().max() > 0


def test_cam_equals_gradcam_over_map_size_on_a_plain_module():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))
    x = torch.randn(3, 3, 6, 6)
    cam = class_activation_map(net, x, [0, 2, 4], layer="1")
    gc = grad_cam(net, x, [0, 2, 4], layer="1")
    torch.testing.assert_close(gc, F.relu(cam) / 36, rtol=1e-5, atol=1e-7)
    # CAM's spatial mean plus the bias is the logit (Zhou et al. 2016, Sec. 2: S_c = sum_k w_k^c F_k)
    logits = net(x)
    torch.testing.assert_close(cam.mean((1, 2)) + net[4].bias[[0, 2, 4]], logits[[0, 1, 2], [0, 2, 4]])


def test_gradcam_lights_exactly_the_quadrant_the_network_looks_at():
    net = QuadrantNet()
    x = torch.rand(2, 1, 8, 8) + 0.1
    # class 0: alpha = w / Z = 32 / 64 = 0.5; the map is 0.5 x on the quadrant, 0 elsewhere (the mask's output is 0)
    torch.testing.assert_close(grad_cam(net, x, 0), _quadrant(0.5 * x[:, 0]))
    # class 1's weight is 0: nothing lights up
    assert grad_cam(net, x, 1).abs().max() == 0
    # CAM = 32 x on the quadrant
    torch.testing.assert_close(class_activation_map(net, x, 0), _quadrant(32 * x[:, 0]))


def test_gradcam_pp_closed_form_by_hand():
    # Chattopadhyay et al. 2018 Eq. 19 on QuadrantNet with x = 1: g = dS/dA = 32/64 = 0.5 everywhere, sum_ab A = 16,
    # alpha = g^2 / (2 g^2 + 16 g^3) = 0.25 / 2.5 = 0.1, w = sum_ij alpha ReLU(g) = 64 * 0.1 * 0.5 = 3.2.
    net = QuadrantNet()
    out = grad_cam_pp(net, torch.ones(1, 1, 8, 8), 0)
    torch.testing.assert_close(out, _quadrant(torch.full((1, 8, 8), 3.2)))


# ----------------------------------------------------------------------------------------------- occlusion


def _sig(z: float) -> float:
    return 1 / (1 + math.exp(-z))


def test_occlusion_gives_the_known_map():
    # A 4x4 square of zeros at rows/cols {0, 2, 4} over an all-ones 8x8 image hides o pixels of the quadrant,
    # o = (4 - r)(4 - c) clipped at 0; s = (16 - o) / 64, z0 - z1 = 32 s - 5 = (16 - o) / 2 - 5.
    net = QuadrantNet()
    occ = occlusion(net, torch.ones(1, 1, 8, 8), target=0, size=4, stride=2, fill=0.0)
    hidden = [[16, 8, 0], [8, 4, 0], [0, 0, 0]]
    want_p = torch.tensor([[_sig((16 - o) / 2 - 5) for o in row] for row in hidden])
    want_top = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 0]])
    torch.testing.assert_close(occ.prob[0], want_p)
    assert torch.equal(occ.top_class[0], want_top)
    assert occ.top_class.dtype == torch.long
    torch.testing.assert_close(occ.centers[..., 0], torch.tensor([[1.5] * 3, [3.5] * 3, [5.5] * 3]))
    torch.testing.assert_close(occ.centers[..., 1], torch.tensor([[1.5, 3.5, 5.5]] * 3))


def test_occlusion_defaults_quarter_side_half_stride():
    # defaults on 8x8: size 8 // 4 = 2, stride 1 -> a 7x7 grid; o = rows hidden x cols hidden of the quadrant
    net = QuadrantNet()
    occ = occlusion(net, torch.ones(2, 1, 8, 8), target=[0, 1])
    assert (occ.size, occ.stride, occ.fill) == (2, 1, 0.0)
    rows = [max(0, min(r + 2, 4) - r) for r in range(7)]
    want0 = torch.tensor([[_sig((16 - a * b) / 2 - 5) for b in rows] for a in rows])
    torch.testing.assert_close(occ.prob[0], want0)
    torch.testing.assert_close(occ.prob[1], 1 - want0)  # image 1's target is class 1
    assert (occ.top_class == 0).all()  # hiding at most 4 of 16 pixels never flips the decision (z0 - z1 >= 1)


def test_occlusion_fill_value_is_used():
    net = QuadrantNet()
    # filling with 1 on an all-ones image changes nothing: the unoccluded probability everywhere
    occ = occlusion(net, torch.ones(1, 1, 8, 8), target=0, size=4, stride=4, fill=1.0)
    torch.testing.assert_close(occ.prob, torch.full((1, 2, 2), _sig(3.0)))


# ----------------------------------------------------------------------------------------------- guided backprop


def test_guided_backprop_passes_only_positive_gradients_at_positive_inputs():
    # logit = 2 relu(x0) - 3 relu(x1) + 4 relu(x2) at x = (1, 1, -1): plain gradient (2, -3, 0); Springenberg et al.'s
    # guided backward also drops the negative gradient arriving at x1: (2, 0, 0)
    net = nn.Sequential(nn.Flatten(), nn.ReLU(inplace=True), nn.Linear(3, 1, bias=False))
    with torch.no_grad():
        net[2].weight.copy_(torch.tensor([[2.0, -3.0, 4.0]]))
    x = torch.tensor([1.0, 1.0, -1.0]).reshape(1, 1, 1, 3)
    g = guided_backprop(net, x, 0)
    assert torch.equal(g, torch.tensor([2.0, 0.0, 0.0]).reshape(1, 1, 1, 3))
    assert net[1].inplace  # restored
    xg = x.clone().requires_grad_(True)  # the hooks are gone: the ordinary gradient again
    net(xg * 1).sum().backward()  # (* 1: the in-place ReLU may not write into a view of a leaf)
    assert torch.equal(xg.grad, torch.tensor([2.0, -3.0, 0.0]).reshape(1, 1, 1, 3))


def test_guided_backprop_refuses_a_model_without_relu_modules():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(2 * 6 * 6, 3))
    with pytest.raises(ValueError, match="no nn.ReLU module"):
        guided_backprop(net, torch.randn(1, 1, 8, 8))


# ----------------------------------------------------------------------------------------------- equality with captum

CAPTUM_CASES = [("lenet5", (2, 1, 32, 32), "features.5"), ("resnet18", (2, 3, 64, 64), "layer4")]


@pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU")
@pytest.mark.parametrize(("name", "shape", "layer"), CAPTUM_CASES)
def test_equal_to_captum(name, shape, layer):
    attr = pytest.importorskip("captum.attr")
    model = cnnzoo.create_model(name).eval()
    module = dict(model.named_modules())[layer]
    x, t = torch.randn(*shape), torch.tensor([3, 7])

    def close(a, b):
        a, b = a.detach(), b.detach()
        assert b.abs().max() > 0
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6 * float(b.abs().max()))

    theirs = attr.LayerGradCam(model, module).attribute(x, target=t, relu_attributions=True)
    close(grad_cam(model, x, t, layer), theirs[:, 0])
    close(guided_backprop(model, x, t), attr.GuidedBackprop(model).attribute(x.clone().requires_grad_(), target=t))
    # the paper upsamples bilinearly; captum's GuidedGradCam defaults to nearest: compare both modes
    for mode in ("bilinear", "nearest"):
        theirs = attr.GuidedGradCam(model, module).attribute(x.clone().requires_grad_(), target=t,
                                                              interpolate_mode=mode)
        close(guided_grad_cam(model, x, t, layer, interpolate_mode=mode), theirs)


def test_guided_gradcam_is_the_product_with_bilinear_upsampling():
    model = cnnzoo.create_model("lenet5")
    x = torch.randn(1, 1, 32, 32)
    up = F.interpolate(grad_cam(model, x, 2)[:, None], size=(32, 32), mode="bilinear", align_corners=False)
    torch.testing.assert_close(guided_grad_cam(model, x, 2), guided_backprop(model, x, 2) * up)


# ----------------------------------------------------------------------------------------------- sanity check


def _trained_lenet5(seed: int) -> nn.Module:
    """lenet5 after one epoch of mnist5k's 4,000 training digits (Adam, lr 2e-3, batch 64, no augmentation):
    84-89% test accuracy on seeds 0-4, about 0.5 s on one thread."""
    from cnnzoo.data import load_dataset, make_loader

    torch.manual_seed(seed)
    model = cnnzoo.create_model("lenet5")
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    loader = make_loader(load_dataset("mnist5k"), "train", batch_size=64, train=True, seed=seed, augment={})
    loader.set_epoch(0)
    for xb, yb in loader:
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def _test_digits(n: int = 64) -> torch.Tensor:
    from cnnzoo.data import load_dataset, make_loader

    return next(iter(make_loader(load_dataset("mnist5k"), "test", batch_size=n, train=False)))[0]


# Measured (seeds 0-4, 64 test digits, Grad-CAM at features.5, 5x5): the mean Spearman correlation with the trained
# network's map after all 5 layers are re-initialised was 0.073, 0.043, -0.087, 0.026, -0.058 (mean -0.001, sd 0.069);
# the trained map's correlation with itself is 1. The threshold 0.25 is the largest seen plus 2.5 sd; an
# implementation that left the weights alone (or a map that ignored them) would report 1.
GRADCAM_RANDOMISED_MAX = 0.25


def test_sanity_check_gradcam_decorrelates_on_trained_lenet5():
    model = _trained_lenet5(0)
    x = _test_digits()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rows = sanity_check(model, x, "gradcam", seed=0)
    assert [r["layer"] for r in rows] == ["fc", "classifier.4", "classifier.1", "features.3", "features.0"]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the model is not modified
    final = rows[-1]
    assert final["spearman"] < GRADCAM_RANDOMISED_MAX
    assert final["constant"] < len(x) and final["spearman_varying"] < GRADCAM_RANDOMISED_MAX
    ref = grad_cam(model, x)
    assert spearman(ref[0], ref[0]) == pytest.approx(1.0)


@pytest.mark.slow
def test_sanity_check_gradcam_decorrelates_over_seeds():
    x = _test_digits()
    finals = [sanity_check(_trained_lenet5(s), x, "gradcam", seed=s)[-1]["spearman"] for s in range(5)]
    print("Grad-CAM Spearman after full randomisation, seeds 0-4:", [round(f, 3) for f in finals])
    assert max(finals) < GRADCAM_RANDOMISED_MAX
    assert abs(sum(finals) / 5) < 0.1


def test_spearman_by_hand_with_ties():
    # a = (1, 2, 2, 3) ranks (1, 2.5, 2.5, 4); b = (4, 3, 2, 1) ranks (4, 3, 2, 1); centred: (-1.5, 0, 0, 1.5) and
    # (1.5, 0.5, -0.5, -1.5): sum of products -4.5, norms sqrt(4.5) and sqrt(5) -> -4.5 / sqrt(22.5)
    assert spearman(torch.tensor([1.0, 2, 2, 3]), torch.tensor([4.0, 3, 2, 1])) == pytest.approx(-4.5 / math.sqrt(22.5))
    assert spearman(torch.tensor([[1.0, 5], [3, 9]]), torch.tensor([[0.0, 2], [1, 100]])) == pytest.approx(1.0)
    assert math.isnan(spearman(torch.zeros(4), torch.arange(4.0)))


def test_spearman_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    a, b = torch.randint(0, 5, (50,)).float(), torch.randn(50)
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a.numpy(), b.numpy()).statistic, abs=1e-12)


# ----------------------------------------------------------------------------------------------- explain()


@pytest.mark.parametrize("method", [m for m in METHODS if m != "deconvnet"])
def test_explain_heat_in_unit_range_at_input_size(method):
    model = cnnzoo.create_model("resnet18")
    x = torch.randn(2, 3, 32, 32)
    e = explain(model, x, method)
    assert e.method == method and e.heat.shape == (2, 32, 32)
    assert e.heat.min() >= 0 and e.heat.max() <= 1
    assert torch.equal(e.target, model.eval()(x).argmax(1))
    torch.testing.assert_close(e.probs.sum(1), torch.ones(2))


def test_explain_occlusion_heat_is_the_probability_drop():
    e = explain(QuadrantNet(), torch.ones(1, 1, 8, 8), "occlusion", target=0, size=4, stride=4)
    # squares: top-left hides the whole quadrant (largest drop -> 1), the other three hide nothing (-> 0)
    want = F.interpolate(torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]]), size=(8, 8), mode="bilinear",
                         align_corners=False)[0]
    torch.testing.assert_close(e.heat, want)


def test_model_modes_restored_and_eval_used():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(4, 3))
    model.train()
    model[1].eval()  # a frozen BN stays frozen
    x = torch.randn(2, 1, 8, 8)
    a, b = grad_cam(model, x, layer="2"), grad_cam(model, x, layer="2")
    torch.testing.assert_close(a, b)  # eval mode: no dropout, BN's running statistics
    assert model.training and model[3].training and not model[1].training


# ----------------------------------------------------------------------------------------------- bad input


def test_unknown_layer_names_close_ones():
    model = cnnzoo.create_model("resnet18")
    with pytest.raises(ValueError, match=r"unknown layer 'layer5'.*close names: layer4"):
        grad_cam(model, torch.randn(1, 3, 32, 32), layer="layer5")
    with pytest.raises(ValueError, match=r"unknown layer 'xyz'.*valid names include: .*layer4"):
        resolve_layer(model, "xyz")


def test_default_layer_is_the_last_stage_or_last_conv():
    assert resolve_layer(cnnzoo.create_model("resnet18"))[0] == "layer4"
    assert resolve_layer(cnnzoo.create_model("lenet5"))[0] == "features.5"
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 3), nn.Flatten(), nn.LazyLinear(2))
    assert resolve_layer(net)[0] == "2"


def test_cam_refused_with_the_reason():
    with pytest.raises(ValueError, match=r"3 fully connected layers after a 5x5 map.*global average pooling.*gradcam"):
        class_activation_map(cnnzoo.create_model("lenet5"), torch.randn(1, 1, 32, 32))
    # a plain network whose default layer (the last conv) is followed by a ReLU: CAM names the pooled layer
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))
    with pytest.raises(ValueError, match=r"the pooled map is layer '1'"):
        class_activation_map(net, torch.randn(1, 3, 8, 8))


def test_target_out_of_range():
    model = QuadrantNet()
    x = torch.ones(1, 1, 8, 8)
    for fn in (grad_cam, class_activation_map, guided_backprop, occlusion):
        with pytest.raises(ValueError, match=r"target 2 is out of range.*2 classes \(valid 0..1\)"):
            fn(model, x, 2)
    with pytest.raises(ValueError, match="target -1 is out of range"):
        explain(model, x, "gradcam", target=-1)
    with pytest.raises(ValueError, match="3 entries for a batch of 1"):
        grad_cam(model, x, [0, 1, 0])


def test_bad_method_input_and_options():
    model = QuadrantNet()
    with pytest.raises(ValueError, match=r"unknown method 'gradcamm' \(did you mean 'gradcam'\?\); valid: cam, "):
        explain(model, torch.ones(1, 1, 8, 8), "gradcamm")
    with pytest.raises(ValueError, match=r"float batch \(N, C, H, W\)"):
        grad_cam(model, torch.ones(1, 8, 8))
    with pytest.raises(ValueError, match="size 9 is larger than the 8x8 input"):
        occlusion(model, torch.ones(1, 1, 8, 8), size=9)
    with pytest.raises(ValueError, match="stride must be a positive integer"):
        occlusion(model, torch.ones(1, 1, 8, 8), stride=0)
    with pytest.raises(ValueError, match="takes no option size"):
        explain(model, torch.ones(1, 1, 8, 8), "gradcam", size=3)


def test_vit_tokens_read_as_the_patch_grid():
    model = cnnzoo.create_model("vit_tiny_patch4_32")
    x = torch.randn(1, 3, 32, 32)
    assert resolve_layer(model)[0] == model.feature_info[-1]["module"]
    # the last block's 1 + 8x8 tokens: the class token dropped, the 64 patch tokens as an 8x8 map (patch 4)
    assert grad_cam(model, x).shape == (1, 8, 8)
    with pytest.raises(ValueError, match="not the spatial mean"):  # the class token, not a pooled map, is classified
        class_activation_map(model, x)


def test_explain_dispatches_deconvnet():
    deconvnet = pytest.importorskip("cnnzoo.explain.deconvnet")
    model = cnnzoo.create_model("lenet5")
    x = torch.randn(2, 1, 32, 32)
    e = explain(model, x, "deconvnet", channel=3)
    assert e.layer == "features.5" and e.heat.shape == (2, 32, 32)
    torch.testing.assert_close(e.raw, deconvnet.deconvnet_projection(model, x, "features.5", channel=3))
