"""Classification metrics accumulated over a loader (summed across ranks under torchrun), and their plots."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

__all__ = ["EvalResult", "evaluate", "plot_confusion", "plot_curves"]


@dataclass
class EvalResult:
    """What `evaluate` measures. Accuracies are fractions in [0, 1]."""

    loss: float
    top1: float
    top5: float
    count: int
    confusion: torch.Tensor  # (num_classes, num_classes) int64: row = true class, column = predicted
    classes: list[str] = field(default_factory=list)

    @property
    def per_class(self) -> dict[str, float]:
        """Accuracy of each class (recall), by class name."""
        totals = self.confusion.sum(1).clamp(min=1)
        acc = (self.confusion.diag().double() / totals).tolist()
        return {name: a for name, a in zip(self.classes, acc)}

    def to_dict(self) -> dict:
        return {"loss": self.loss, "top1": self.top1, "top5": self.top5, "count": self.count,
                "per_class": self.per_class, "confusion": self.confusion.tolist(), "classes": self.classes}


@torch.no_grad()
def evaluate(model: nn.Module, loader, num_classes: int, classes: list[str] | None = None,
             autocast: contextlib.AbstractContextManager | None = None, channels_last: bool = False) -> EvalResult:
    """Run ``model`` in eval mode over ``loader``; every rank must call it (the sums are all-reduced)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    counts = torch.zeros(3, dtype=torch.float64, device=device)  # n, top1 hits, top5 hits
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=device)
    k = min(5, num_classes)
    for images, labels in loader:
        if images.shape[0] == 0:
            continue
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast or contextlib.nullcontext():
            logits = model(images)
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, labels, reduction="sum").double()
        topk = logits.topk(k, dim=1).indices
        counts[0] += labels.numel()
        counts[1] += (topk[:, 0] == labels).sum()
        counts[2] += (topk == labels[:, None]).any(1).sum()
        confusion += torch.bincount(labels * num_classes + topk[:, 0], minlength=num_classes * num_classes)
    if dist.is_available() and dist.is_initialized():  # sums over the ranks' shards of the test set
        for t in (loss_sum, counts, confusion):
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
    model.train(was_training)
    n = max(1.0, counts[0].item())
    return EvalResult(loss=loss_sum.item() / n, top1=counts[1].item() / n, top5=counts[2].item() / n,
                      count=int(counts[0].item()), confusion=confusion.view(num_classes, num_classes).cpu(),
                      classes=list(classes or [str(i) for i in range(num_classes)]))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def plot_curves(rows: list[dict], path: str | Path) -> None:
    """Loss and accuracy per epoch (train and test) side by side, saved as a PNG."""
    plt = _pyplot()
    epochs = [r["epoch"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, [r["train_loss"] for r in rows], "o-", label="train")
    ax1.plot(epochs, [r["test_loss"] for r in rows], "o-", label="test")
    ax1.set(xlabel="epoch", ylabel="loss", title="loss")
    ax2.plot(epochs, [100 * r["train_acc"] for r in rows], "o-", label="train")
    ax2.plot(epochs, [100 * r["test_acc"] for r in rows], "o-", label="test")
    ax2.set(xlabel="epoch", ylabel="top-1 accuracy (%)", title="accuracy")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    _save(fig, path)


def _save(fig, path: str | Path, dpi: int = 100) -> None:
    """Save ``fig`` atomically and close it (`cnnzoo.fileio.atomic_savefig`)."""
    from ..fileio import atomic_savefig

    atomic_savefig(fig, path, dpi)


def plot_confusion(result: EvalResult, path: str | Path, title: str = "test confusion matrix") -> None:
    """The confusion matrix as a PNG (counts written in the cells for up to 20 classes)."""
    plt = _pyplot()
    cm = result.confusion.numpy()
    n = cm.shape[0]
    size = min(12, 3 + 0.45 * n)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(cm, cmap="Blues")
    if n <= 20:
        ax.set_xticks(range(n), result.classes, rotation=90)
        ax.set_yticks(range(n), result.classes)
        thresh = cm.max() / 2 if cm.size else 0
        for i in range(n):
            for j in range(n):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if cm[i, j] > thresh else "black")
    ax.set(xlabel="predicted", ylabel="true", title=f"{title} (top-1 {100 * result.top1:.2f}%)")
    fig.tight_layout()
    _save(fig, path)
