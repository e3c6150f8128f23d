"""RetinaNet (Lin et al. 2017, "Focal Loss for Dense Object Detection"; issue 27): torchvision equality, counts, the
prior-probability initialisation, the focal loss normalisation, the anchor assignment band, training and inference.

The live-equality expectations are torchvision's: tests/fixtures/layouts/torchvision__retinanet_resnet50_fpn.json was
written by tests/helpers/make_det_layouts.py with torchvision 0.29.1 (its docstring gives the format): the raw
head outputs of torchvision's backbone + head on a probe, sampled, with sums, and its anchors. Each test fills a state
dict with the fixture's keys by the fill rule (tests/layout_fill.py), saves it, loads it with
``create_model("retinanet_resnet50_fpn", weights=FILE)`` and no options, and compares. The other expectations come
from the paper (section cited at each) and hand arithmetic.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
from safetensors.torch import save_file

from cnnzoo import create_model
from cnnzoo.detection.models.retinanet import FrozenBatchNorm2d, upgrade_legacy_keys
from cnnzoo.detection.registry import create_detector, get_detector_card, list_detectors
from layout_fill import filled_state_dict, load_layout, make_input

NAME = "retinanet_resnet50_fpn"
REL = 1e-4
TINY = {"backbone": "resnet18", "backbone_options": {"layers": [1, 1, 1, 1]}, "in_channels": 1, "num_classes": 11,
        "frozen_bn": False, "fpn_channels": 32, "anchor_sizes": [16, 32, 64, 128, 256]}


@functools.cache
def _filled() -> tuple[dict, dict[str, torch.Tensor]]:
    layout = load_layout(f"torchvision__{NAME}")
    return layout, filled_state_dict(layout)


@functools.cache
def _probe() -> torch.Tensor:
    return make_input(2, 3, 320)[:, :, :256, :].contiguous()  # the fixture's input_rule


def _rel(a: torch.Tensor, ref: torch.Tensor) -> float:
    return ((a - ref).abs().max() / ref.abs().max()).item()


def _tiny(**extra) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_detector(NAME, **{**TINY, **extra})


def _check_outputs(layout: dict, out: dict[str, torch.Tensor]) -> None:
    idx = torch.tensor(layout["anchor_index"])
    assert list(out["cls_logits"].shape) == [2, layout["num_anchors"], layout["num_outputs"]] == [2, 15354, 91]
    assert list(out["bbox_regression"].shape) == [2, 15354, 4]
    starts = [sum(layout["anchors_per_level"][:i]) for i in range(5)]
    for key in ("cls_logits", "bbox_regression"):
        got = out[key]
        ref = torch.tensor(layout[key])
        assert _rel(got[:, idx], ref) < REL, f"{key}: max rel diff {_rel(got[:, idx], ref):.2e}"
        s, a = got.double().sum().item(), got.double().abs().sum().item()
        assert abs(a - layout[f"{key}_abs_sum"]) < REL * layout[f"{key}_abs_sum"], (key, a)
        assert abs(s - layout[f"{key}_sum"]) < REL * layout[f"{key}_abs_sum"], (key, s)  # mixed signs: vs sum |x|
        for lvl, (st, n) in enumerate(zip(starts, layout["anchors_per_level"])):
            ls = got[:, st:st + n].double().sum().item()
            assert abs(ls - layout[f"{key}_level_sums"][lvl]) < REL * layout[f"{key}_abs_sum"], (key, lvl, ls)


# ------------------------------------------------------------------------------------------- torchvision equality
def test_torchvision_checkpoint_gives_torchvision_outputs(tmp_path):
    """Issue 27 "Done when": torchvision's retinanet_resnet50_fpn state dict (FrozenBatchNorm2d layout, as its COCO
    checkpoint) loads through create_model with no options and gives its raw head outputs and anchors."""
    layout, sd = _filled()
    path = tmp_path / "retinanet.pth"
    torch.save(sd, path)
    net = create_model(NAME, weights=str(path)).eval()
    assert isinstance(net.backbone.body.bn1, FrozenBatchNorm2d)
    with torch.no_grad():
        out = net(_probe())
    _check_outputs(layout, out)
    assert [list(s) for s in net.grid_sizes((256, 320))] == layout["level_sizes"]
    anchors = net.anchors((256, 320))
    assert anchors.shape == (layout["num_anchors"], 4)
    assert torch.equal(anchors[torch.tensor(layout["anchor_index"])], torch.tensor(layout["anchors"]))
    assert anchors.double().sum().item() == layout["anchors_sum"]


@pytest.mark.slow
def test_trainable_bn_file_loads_without_options(tmp_path):
    """torchvision built without weights has plain BatchNorm2d (num_batches_tracked keys): such a file loads as
    frozen_bn=False with no options, and in eval mode gives the same outputs."""
    layout, sd = _filled()
    sd = dict(sd)
    for key in [k for k in sd if k.startswith("backbone.body.") and k.endswith(".running_var")]:
        sd[key.removesuffix("running_var") + "num_batches_tracked"] = torch.tensor(0)
    path = tmp_path / "retinanet_bn.safetensors"
    save_file(sd, str(path))
    net = create_detector(NAME, weights=str(path)).eval()
    assert isinstance(net.backbone.body.bn1, torch.nn.BatchNorm2d)
    with torch.no_grad():
        _check_outputs(layout, net(_probe()))
    with pytest.raises(ValueError, match="frozen_bn=False"):
        create_detector(NAME, weights=str(path), frozen_bn=True)


def test_layout_equals_torchvision():
    layout = load_layout(f"torchvision__{NAME}")
    net = create_detector(NAME)
    assert [[k, list(v.shape)] for k, v in net.state_dict().items()] == [[k, s] for k, s, _ in layout["state_dict"]]
    assert sum(p.numel() for p in net.parameters()) == layout["params"]
    assert layout["params_trainable_bn"] == 34_068_119


def test_counts_frozen_and_trainable_bn():
    """Issue 27: 34,014,999 parameters with torchvision's frozen BN, 34,068,119 with trainable BN. By hand:
    body = resnet50 25,557,032 less its fc (2048 * 1000 + 1000) = 23,508,032, of which the BN gammas and betas are
    2 * 26,560 = 53,120 (BN channels: stem 64; layer1 3 * (64 + 64 + 256) + 256; layer2 4 * (128 + 128 + 512) + 512;
    layer3 6 * (256 + 256 + 1024) + 1024; layer4 3 * (512 + 512 + 2048) + 2048). FrozenBatchNorm2d keeps them as
    buffers, so they are no parameters: that is the whole difference. FPN: laterals (512 + 1024 + 2048) * 256 + 3 * 256,
    outputs and P6, P7 (from P5: 256 inputs) 5 * (256 * 256 * 9 + 256). Head (Sec. 4, Fig. 3): 8 conv 3x3 256 -> 256,
    cls_logits 256 -> 9 * 91, bbox_reg 256 -> 9 * 4, all 3x3 with bias."""
    conv = 256 * 256 * 9 + 256
    bn = 2 * (64 + 3 * (64 + 64 + 256) + 256 + 4 * (128 + 128 + 512) + 512 + 6 * (256 + 256 + 1024) + 1024
              + 3 * (512 + 512 + 2048) + 2048)
    body = 25_557_032 - (2048 * 1000 + 1000)
    fpn = (512 + 1024 + 2048) * 256 + 3 * 256 + 5 * conv
    head = 8 * conv + (256 * 9 * 9 * 91 + 9 * 91) + (256 * 9 * 36 + 36)
    assert bn == 53_120
    assert body + fpn + head == 34_068_119
    assert body - bn + fpn + head == 34_014_999
    frozen = create_detector(NAME)
    trainable = create_detector(NAME, frozen_bn=False)
    assert sum(p.numel() for p in frozen.parameters()) == 34_014_999
    assert sum(p.numel() for p in trainable.parameters()) == 34_068_119
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in frozen.modules())
    assert not any(k.endswith("num_batches_tracked") for k in frozen.state_dict())
    paper = create_detector(NAME, p6_from="c5")  # the paper's P6 on C5: 2048 instead of 256 inputs
    assert sum(p.numel() for p in paper.parameters()) == 34_014_999 + (2048 - 256) * 256 * 9


def test_p6_from_the_right_level():
    """torchvision's v1 builder: P6 = conv(P5) (LastLevelP6P7(256, 256)); the paper (Sec. 4): P6 = conv(C5);
    P7 = conv(ReLU(P6)) in both."""
    for p6_from in ("p5", "c5"):
        net = _tiny(p6_from=p6_from).eval()
        seen: dict[str, torch.Tensor] = {}

        def keep(key: str, pick, seen=seen):
            return lambda m, a, o: seen.update({key: pick(a, o)})

        fpn = net.backbone.fpn
        hooks = [fpn.extra_blocks.p6.register_forward_hook(keep("p6_in", lambda a, o: a[0])),
                 fpn.extra_blocks.p7.register_forward_hook(keep("p7_in", lambda a, o: a[0])),
                 fpn.layer_blocks[-1].register_forward_hook(keep("p5", lambda a, o: o)),
                 net.backbone.body.register_forward_hook(keep("c5", lambda a, o: o[-1]))]
        with torch.no_grad():
            levels = net.pyramid(torch.randn(1, 1, 64, 96))
        for h in hooks:
            h.remove()
        assert torch.equal(seen["p6_in"], seen["p5" if p6_from == "p5" else "c5"])
        assert torch.equal(seen["p7_in"], torch.relu(levels[3]))
        assert [tuple(t.shape[-2:]) for t in levels] == [(8, 12), (4, 6), (2, 3), (1, 2), (1, 1)]


# ------------------------------------------------------------------------------------------- initialisation
def test_prior_probability_bias_and_initial_loss():
    """Sec. 4.1 "Initialization": the class subnet's last bias b = -log((1 - pi) / pi), pi = 0.01, so every anchor
    starts at p ~ 0.01, and the initial classification loss is small (Sec. 3.3: no "large, destabilizing loss value"
    from the background anchors): per positive anchor alpha (1 - pi)^2 (-log pi) for its class, and
    (1 - alpha) pi^2 (-log(1 - pi)) for each other (anchor, class) that is not ignored."""
    net = _tiny().train()
    bias = net.head.classification_head.cls_logits.bias
    assert torch.allclose(bias, torch.full_like(bias, -math.log(99.0)))
    assert torch.allclose(torch.sigmoid(bias), torch.full_like(bias, 0.01))
    assert (net.head.regression_head.bbox_reg.bias == 0).all()
    for conv in [*net.head.classification_head.conv, *net.head.regression_head.conv]:
        w = conv[0].weight
        assert (conv[0].bias == 0).all() and abs(w.std().item() - 0.01) < 1e-3 and abs(w.mean().item()) < 1e-3
    x = torch.rand(2, 1, 64, 64)
    out = net(x)
    p = torch.sigmoid(out["cls_logits"])
    assert abs(p.mean().item() - 0.01) < 1e-4
    targets = [{"boxes": torch.tensor([[8.0, 8.0, 40.0, 40.0]]), "labels": torch.tensor([3])},
               {"boxes": torch.tensor([[4.0, 20.0, 36.0, 36.0], [40.0, 40.0, 60.0, 60.0]]),
                "labels": torch.tensor([1, 7])}]
    loss = net.loss(out, targets, (64, 64))
    # hand value from the match counts (how many positives and ignored anchors; positives' classes are single)
    anchors = net.anchors((64, 64))
    k, pi, alpha = 11, 0.01, 0.25
    expected = []
    for t in targets:
        iou = _iou(t["boxes"], anchors)
        best = iou.max(0).values
        pos = (best >= 0.5) | _best_per_box(iou)
        valid = pos | (best < 0.4)
        n_pos, n_valid = int(pos.sum()), int(valid.sum())
        pos_term = alpha * (1 - pi) ** 2 * -math.log(pi)
        neg_term = (1 - alpha) * pi ** 2 * -math.log(1 - pi)
        expected.append((n_pos * pos_term + (n_valid * k - n_pos) * neg_term) / max(1, n_pos))
    want = sum(expected) / 2
    assert abs(loss["classification"].item() - want) < 0.01 * want
    assert loss["classification"].item() < 1.5  # ~ -alpha log(pi) = 1.15 per positive: nothing destabilising


def _iou(boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """IoU by hand (test-side), (M, A)."""
    b, a = boxes.double()[:, None], anchors.double()[None]
    iw = (torch.minimum(b[..., 2], a[..., 2]) - torch.maximum(b[..., 0], a[..., 0])).clamp(min=0)
    ih = (torch.minimum(b[..., 3], a[..., 3]) - torch.maximum(b[..., 1], a[..., 1])).clamp(min=0)
    inter = iw * ih
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    return inter / (area_b + area_a - inter)


def _best_per_box(iou: torch.Tensor) -> torch.Tensor:
    """Low-quality matches: the anchors of highest IoU with some box (torchvision's and Detectron's rule)."""
    return (iou == iou.max(1, keepdim=True).values).any(0)


# ------------------------------------------------------------------------------------------------------ loss
LN2 = math.log(2.0)
NEG = 0.75 * 0.5 ** 2 * LN2  # focal loss at p = 0.5 (logit 0), target 0: (1 - alpha) p^2 (-log(1 - p))
POS = 0.25 * 0.5 ** 2 * LN2  # target 1: alpha (1 - p)^2 (-log p)


def _hand_net(box_loss: str = "smooth_l1") -> torch.nn.Module:
    """A tiny net whose anchors are 4 hand boxes: A0 = the object, A1 IoU 0.45 with it (ignored), A2, A3 far."""
    net = _tiny(num_classes=3, box_loss=box_loss)
    hand = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 4.5], [50.0, 50.0, 60.0, 60.0],
                         [80.0, 80.0, 90.0, 90.0]])
    net.anchors = lambda image_size: hand
    return net


def test_focal_loss_normalised_by_positives():
    """Sec. 3.3 / 4.1: the focal loss summed over all anchors (the ignored ones excepted) and classes, divided by
    the number of anchors assigned to an object -- not by all anchors -- per image, averaged over the images."""
    net = _hand_net()
    zeros = {"cls_logits": torch.zeros(1, 4, 3), "bbox_regression": torch.zeros(1, 4, 4)}
    one = [{"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0]]), "labels": torch.tensor([1])}]
    loss = net.loss(zeros, one, (100, 100))
    # valid anchors A0, A2, A3 (A1 ignored) x 3 classes = 9 terms, 1 positive; divided by 1 positive
    assert loss["classification"].item() == pytest.approx(8 * NEG + POS, rel=1e-6)
    assert loss["bbox_regression"].item() == 0.0  # A0 is the object: zero offsets
    two = [{"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0]]), "labels": torch.tensor([1, 2])}]
    loss2 = net.loss(zeros, two, (100, 100))
    assert loss2["classification"].item() == pytest.approx((7 * NEG + 2 * POS) / 2, rel=1e-6)
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
    assert net.loss(zeros, empty, (100, 100))["classification"].item() == pytest.approx(12 * NEG, rel=1e-6)
    batch = {k: v.expand(2, -1, -1) for k, v in zeros.items()}
    both = net.loss(batch, one + two, (100, 100))
    assert both["classification"].item() == pytest.approx((8 * NEG + POS + (7 * NEG + 2 * POS) / 2) / 2, rel=1e-6)
    assert both["loss"].item() == pytest.approx(both["classification"].item() + both["bbox_regression"].item())


def test_box_loss_smooth_l1_and_l1_on_positives():
    """Box regression on the positive anchors only, divided by their number: the paper's smooth L1 (beta 1/9,
    Detectron) by default, torchvision's L1 as an option."""
    deltas = torch.zeros(1, 4, 4)
    deltas[0, 0, 0] = 0.5  # A0 (the positive): |t_x - 0| = 0.5
    deltas[0, 1:, :] = 7.0  # ignored and negative anchors: no box loss whatever they say
    out = {"cls_logits": torch.zeros(1, 4, 3), "bbox_regression": deltas}
    one = [{"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0]]), "labels": torch.tensor([1])}]
    assert _hand_net().loss(out, one, (100, 100))["bbox_regression"].item() == pytest.approx(0.5 - 0.5 / 9)
    assert _hand_net("l1").loss(out, one, (100, 100))["bbox_regression"].item() == pytest.approx(0.5)


def test_anchor_assignment_band():
    """Sec. 4 "Anchors": IoU >= 0.5 object, < 0.4 background, [0.4, 0.5) ignored; with low-quality matches (the
    default, torchvision and Detectron) a box's best anchor is positive whatever its IoU."""
    net = _tiny()
    iou = torch.tensor([[0.5, 0.4999, 0.4, 0.3999, 0.0],
                        [0.1, 0.2, 0.0, 0.0, 0.3]])
    assert net.matcher(iou).tolist() == [0, -2, -2, -1, 1]  # box 1's best anchor (0.3) kept by low quality
    strict = _tiny(low_quality_matches=False)
    assert strict.matcher(iou).tolist() == [0, -2, -2, -1, -1]
    # the same band through the loss: anchors of IoU 0.5, 0.45, 0.39 with the object
    net = _tiny(num_classes=3, low_quality_matches=False)
    hand = torch.tensor([[0.0, 0.0, 10.0, 5.0], [0.0, 0.0, 10.0, 4.5], [0.0, 0.0, 10.0, 3.9]])
    net.anchors = lambda image_size: hand
    out = {"cls_logits": torch.zeros(1, 3, 3), "bbox_regression": torch.zeros(1, 3, 4)}
    t = [{"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0]]), "labels": torch.tensor([2])}]
    assert net.loss(out, t, (20, 20))["classification"].item() == pytest.approx(POS + 5 * NEG, rel=1e-6)


def test_loss_errors():
    net = _tiny()
    out = net(torch.rand(1, 1, 64, 64))
    with pytest.raises(ValueError, match="valid: 1..10"):
        net.loss(out, [{"boxes": torch.tensor([[0.0, 0.0, 9.0, 9.0]]), "labels": torch.tensor([0])}], (64, 64))
    with pytest.raises(ValueError, match="image size"):
        net.loss(out, [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}], (96, 96))
    with pytest.raises(ValueError, match="2 targets"):
        net.loss(out, [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}] * 2, (64, 64))


# ------------------------------------------------------------------------------------------- training, inference
def test_training_step_on_digits_lowers_the_loss():
    from cnnzoo.detection.data import digits_detection

    train, _ = digits_detection(num_train=4, num_test=1, canvas=64, max_scale=1.2, max_digits=3)
    x = torch.stack([train.image(i) for i in range(4)]).float() / 255.0
    targets = [{"boxes": train.boxes[i], "labels": train.labels[i] + 1} for i in range(4)]  # digit d -> label d + 1
    net = _tiny().train()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    before = net.loss(net(x), targets, (64, 64))
    before["loss"].backward()
    opt.step()
    with torch.no_grad():
        after = net.loss(net(x), targets, (64, 64))
    assert torch.isfinite(before["loss"]) and after["loss"].item() < before["loss"].item()


def test_detect_returns_boxes_inside_the_image():
    net = _tiny()
    torch.manual_seed(1)
    with torch.no_grad():  # a trained-looking head: scores spread over (0, 1)
        net.head.classification_head.cls_logits.bias.normal_(0, 2)
        net.head.regression_head.bbox_reg.bias.normal_(0, 1)
    x = torch.rand(2, 1, 72, 88)
    dets = net.train().detect(x, score_thresh=0.05, max_detections=40)
    assert net.training  # the mode is restored
    assert len(dets) == 2
    for d in dets:
        n = len(d["boxes"])
        assert 0 < n <= 40 and d["boxes"].shape == (n, 4) and d["scores"].shape == d["labels"].shape == (n,)
        b = d["boxes"]
        assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all() and (b[:, 2] <= 88).all() and (b[:, 3] <= 72).all()
        assert (b[:, 2] >= b[:, 0]).all() and (b[:, 3] >= b[:, 1]).all()
        assert d["labels"].min() >= 1 and d["labels"].max() <= 10
        assert (d["scores"] > 0.05).all() and torch.equal(d["scores"], d["scores"].sort(descending=True).values)
    fresh = _tiny().detect(x)  # the prior: every score ~0.01 < 0.05, nothing detected
    assert all(len(d["boxes"]) == 0 and d["boxes"].shape == (0, 4) for d in fresh)


def test_anchors_match_the_outputs_for_any_size():
    net = _tiny().eval()
    for h, w in ((64, 64), (100, 130), (33, 47)):
        with torch.no_grad():
            out = net(torch.rand(1, 1, h, w))
        assert out["cls_logits"].shape == (1, len(net.anchors((h, w))), 11)
        assert out["bbox_regression"].shape == (1, len(net.anchors((h, w))), 4)
    # Sec. 4 "Anchors": 9 per location, sizes 2^{0, 1/3, 2/3} x base (torchvision: truncated), ratios 1:2, 1:1, 2:1
    a = create_detector(NAME).anchors((128, 128))
    assert len(a) == 9 * (16 * 16 + 8 * 8 + 4 * 4 + 2 * 2 + 1)
    w, h = a[:9, 2] - a[:9, 0], a[:9, 3] - a[:9, 1]
    assert (a[:9, :2] + a[:9, 2:]).abs().max() == 0  # the first cell's anchors centred on (0, 0)
    assert [round(v) for v in (w * h).sqrt().tolist()] == [32, 40, 50] * 3
    assert (h / w).tolist()[::3] == pytest.approx([0.5, 1.0, 2.0], rel=0.05)  # half-sizes rounded to pixels


# ----------------------------------------------------------------------------------------------- options, files
def test_options_and_errors(tmp_path):
    with pytest.raises(ValueError, match="p6_from"):
        create_detector(NAME, p6_from="p4")
    with pytest.raises(ValueError, match="reductions"):
        create_detector(NAME, backbone="densenet40_k12_cifar")
    with pytest.raises(ValueError, match="anchor_sizes"):
        create_detector(NAME, anchor_sizes=[32, 64])
    with pytest.raises(ValueError, match="in_channels=3"):
        _tiny()(torch.rand(1, 3, 32, 32))
    net = create_detector(NAME, bn_eps=0.0)  # torchvision's COCO_V1 weights run with eps 0 (overwrite_eps)
    assert {m.eps for m in net.modules() if isinstance(m, FrozenBatchNorm2d)} == {0.0}
    tiny = _tiny()
    path = tmp_path / "tiny.pth"
    torch.save(tiny.state_dict(), path)
    with pytest.raises(ValueError, match="does not fit"):
        create_detector(NAME, weights=str(path))  # another backbone's file without its options
    again = create_detector(NAME, weights=str(path), backbone="resnet18", backbone_options={"layers": [1, 1, 1, 1]},
                            anchor_sizes=[16, 32, 64, 128, 256])  # the rest comes from the file
    assert (again.num_classes, again.in_channels) == (11, 1)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), tiny.state_dict().values()))


def test_legacy_torchvision_keys_upgrade():
    """torchvision's published COCO file predates its 0.13 key names; `upgrade_legacy_keys` renames them."""
    _, sd = _filled()
    legacy = {}
    for k, v in sd.items():
        k = k.replace("inner_blocks.0.0.", "inner_blocks.0.").replace("layer_blocks.2.0.", "layer_blocks.2.")
        k = k.replace("classification_head.conv.1.0.", "classification_head.conv.2.")
        k = k.replace("regression_head.conv.3.0.", "regression_head.conv.6.")
        legacy[k] = v
    assert legacy.keys() != sd.keys()
    assert list(upgrade_legacy_keys(legacy)) == list(sd)


def test_card():
    assert NAME in list_detectors()
    card = get_detector_card(NAME)
    assert card.paper.url == "https://arxiv.org/abs/1708.02002"
    assert any("P6 from P5" in d for d in card.deviations)
    assert "Focal loss" in card.notes or "focal loss" in card.notes
