"""Evaluation: loss, top-1/top-5, per-class accuracy and the confusion matrix of a model on a loader."""

from .metrics import EvalResult, evaluate, plot_confusion, plot_curves

__all__ = ["EvalResult", "evaluate", "plot_confusion", "plot_curves"]
