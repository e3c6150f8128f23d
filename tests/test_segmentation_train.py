"""Training smoke: a small padded U-Net learns digits-segmentation on one thread (mean IU above chance)."""

import pytest
import torch
import torch.nn.functional as F

from cnnzoo.segmentation import ConfusionMatrix, create_segmenter, digits_segmentation


@pytest.mark.slow
def test_unet_padded_learns_digits_segmentation_in_50_steps():
    # measured (1 thread): ~11 s of training; mean IU 0.012 at init -> ~0.12 after 50 steps; predicting background
    # everywhere scores 0.087 (background IU ~0.95, 0 for the 10 digits, / 11)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        train, test = digits_segmentation(num_train=400, num_test=100)
        net = create_segmenter("unet_padded", in_channels=1, num_classes=11, base_channels=8, norm_layer="batchnorm")
        opt = torch.optim.Adam(net.parameters(), lr=3e-3)

        def norm(x):
            return (x.float() / 255 - 0.13) / 0.31

        def mean_iu(pred_fn):
            cm = ConfusionMatrix(11)
            for i in range(0, len(test), 50):
                cm.update(pred_fn(test.images[i : i + 50]), test.masks[i : i + 50].long())
            return cm.compute()["mean_iu"]

        background = mean_iu(lambda x: torch.zeros(x.shape[0], *x.shape[2:], dtype=torch.long))
        g = torch.Generator().manual_seed(0)
        for _ in range(50):
            idx = torch.randint(0, len(train), (8,), generator=g)
            loss = F.cross_entropy(net(norm(train.images[idx])), train.masks[idx].long(), ignore_index=255)
            opt.zero_grad()
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            learned = mean_iu(lambda x: net(norm(x)).argmax(1))
    finally:
        torch.set_num_threads(threads)
    assert background == pytest.approx(0.087, abs=0.01)
    assert learned > background + 0.02
