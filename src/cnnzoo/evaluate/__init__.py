"""Evaluation: loss, top-1/top-5, per-class accuracy and the confusion matrix of a model on a loader; the papers'
test-time protocols (centre crop, 10 crops, 50 crops, 144 crops, dense and multi-scale evaluation) and `to_dense`."""

from .dense import DenseNet, to_dense
from .metrics import EvalResult, evaluate, plot_confusion, plot_curves
from .protocols import PROTOCOLS, ProtocolResult, evaluate_protocols, parse_protocols, protocol_probs

__all__ = ["PROTOCOLS", "DenseNet", "EvalResult", "ProtocolResult", "evaluate", "evaluate_protocols",
           "parse_protocols", "plot_confusion", "plot_curves", "protocol_probs", "to_dense"]
