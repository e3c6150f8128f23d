"""Recurrent networks that read an image as a sequence: sequential MNIST with an RNN, an LSTM or a GRU.

- Elman, "Finding Structure in Time", Cognitive Science 14(2), 1990. https://doi.org/10.1207/s15516709cog1402_1
- Hochreiter, Schmidhuber, "Long Short-Term Memory", Neural Computation 9(8), 1997.
  https://doi.org/10.1162/neco.1997.9.8.1735 (the forget gate: Gers, Schmidhuber, Cummins, "Learning to Forget:
  Continual Prediction with LSTM", Neural Computation 12(10), 2000)
- Cho et al., "Learning Phrase Representations using RNN Encoder-Decoder for Statistical Machine Translation",
  EMNLP 2014. https://arxiv.org/abs/1406.1078
- The task: Le, Jaitly, Hinton, "A Simple Way to Initialize Recurrent Networks of Rectified Linear Units", 2015
  (Section 4.2, MNIST read as a sequence). https://arxiv.org/abs/1504.00941

Key ideas
    A recurrent network carries a state from one step of a sequence to the next, with the same weights at every
    step: h_t = f(W_hh h_{t-1} + W_xh x_t) (note 002; Elman's "context units" hold a copy of the hidden layer of
    the previous step). Trained by back-propagation through time, its gradient with respect to early states is a
    product of T Jacobians W_hh^T diag(f'): it vanishes when their singular values are below 1 and explodes when
    they are above (note 002). Exploding gradients are cut by clipping (note 002: element-wise, or the norm:
    g <- g v / ||g|| when ||g|| > v; see ``optim.grad_clip`` / ``optim.grad_clip_mode`` in the training config).
    Vanishing gradients are what the LSTM addresses: a memory cell c_t updated additively (c_t = f_t c_{t-1} +
    i_t g_t, the "constant error carousel") keeps the error flowing across long lags, and multiplicative gates
    (input, output and, since Gers et al. 2000, forget) decide what is written, read and kept. The GRU (Cho et al.)
    keeps the gating with two gates and no separate cell: an update gate interpolates between the old state and a
    candidate, a reset gate lets the candidate ignore the old state.
    An image becomes a sequence by reading it row by row (28 steps of 28 pixels for MNIST) or pixel by pixel (784
    steps of 1, Le et al.'s harder benchmark); the state after the last step classifies the digit.

Which table the code reproduces
    None of the three papers classifies images: Elman trains on toy sequences (temporal XOR, letter and word
    sequences), Hochreiter & Schmidhuber on long-time-lag toy problems (embedded Reber grammar, adding and
    multiplication problems), Cho et al. on English-French translation. The sequential-MNIST task is Le et al.'s
    Section 4.2 (pixel by pixel, 100 hidden units; recalled from the paper: IRNN about 97% test accuracy, LSTM and
    tanh RNN far lower at 784 steps; the stored copy available while writing held only the paper's opening, so
    these figures are not checked here). The cells themselves are checked against ``torch.nn.RNN/LSTM/GRU``
    (equal outputs and gradients for the same weights), and the measured accuracies on the built-in digits are in
    the README.

Training setup in the paper
    Elman: back-propagation with the context units treated as extra inputs (the error is not propagated back
    through time), logistic units. Hochreiter & Schmidhuber: gradient truncated at the cell input (real-time
    recurrent learning / truncated BPTT), online learning. Cho et al.: 1000 hidden units, Adadelta, SGD on
    minibatches of 64 phrase pairs. Le et al. (pixel MNIST): SGD with gradient clipping, 100 hidden units, the
    IRNN's recurrent matrix initialised to the identity with ReLU units.

This implementation
    ``rnn_mnist``, ``lstm_mnist``, ``gru_mnist``: an image (B, C, H, W) is read as H time steps of C * W features
    (``sequence="rows"``, the default: row t of every channel is x_t) or H * W steps of C features in raster order
    (``sequence="pixels"``, Le et al.'s setup), through a recurrent layer of ``hidden_size`` units (128) and
    ``num_layers`` layers (1), optionally ``bidirectional``; the final state of the top layer (for a bidirectional
    layer, the forward direction's after the last step and the backward direction's after the first, concatenated)
    goes through dropout (``drop_rate``, also applied between stacked layers as torch's ``dropout``) to a linear
    classifier. ``forward_features`` returns the top layer's outputs at every step, (B, T, hidden_size x
    directions); ``forward_head`` reads the final state from them.

    The recurrent layers are `cnnzoo.layers.recurrent` (``RNN``, ``LSTM``, ``GRU``): torch's modules, parameter
    names and initialisation (every weight U(-1/sqrt(H), 1/sqrt(H))), so a ``torch.nn.LSTM`` state dict loads into
    ``model.rnn``; ``fused=True`` (default) runs torch's kernels, ``fused=False`` the equations written out in
    Python (same outputs; `benchmarks/bench_recurrent.py` compares their speed). Where they follow torch rather
    than note 002 (two bias vectors, the GRU's reset gate applied after the product W_hn h, the update gate's
    orientation) is listed in that module's docstring.

    Deviations: the RNN uses tanh (Elman's units were logistic; ``nonlinearity="relu"`` is Le et al.'s ReLU RNN,
    without their identity initialisation); the LSTM has a forget gate (Gers et al. 2000; the 1997 cell has
    none), no peephole connections, and full back-propagation through time rather than the 1997 truncated
    gradient. In ``sequence="rows"`` mode the input layer takes exactly ``input_size`` (28) columns: images of
    another width are average-pooled (adaptively) to 28 columns first; any height works (it is the number of
    steps). The cards' recipe hints train with Adam (lr 3e-3, no weight decay) and gradient clipping by norm at
    1.0 for 15 epochs (see ``get_card(NAME).recipe``), not with any of the papers' optimisers.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from ..layers import ClassifierHead
from ..layers.recurrent import GRU, LSTM, RNN
from ..registry import Paper, register_model
from .base import ZooModel

ELMAN = Paper("Finding Structure in Time", "J. L. Elman", 1990, "https://doi.org/10.1207/s15516709cog1402_1")
LSTM_PAPER = Paper("Long Short-Term Memory", "S. Hochreiter, J. Schmidhuber", 1997,
                   "https://doi.org/10.1162/neco.1997.9.8.1735")
GRU_PAPER = Paper("Learning Phrase Representations using RNN Encoder-Decoder for Statistical Machine Translation",
                  "K. Cho, B. van Merrienboer, C. Gulcehre, D. Bahdanau, F. Bougares, H. Schwenk, Y. Bengio", 2014,
                  "https://arxiv.org/abs/1406.1078")

SEQUENCES = ("rows", "pixels")


class SequenceClassifier(ZooModel):
    """An image read as a sequence (rows or pixels) by a recurrent layer; its final state -> linear classifier."""

    min_input_size = 1
    cell: str = "lstm"
    no_feature_maps = ("a recurrent network reads the image as a sequence of rows or pixels: its features are hidden "
                       "states per time step, (B, T, hidden), not a spatial map")

    def __init__(self, *, hidden_size: int = 128, num_layers: int = 1, bidirectional: bool = False,
                 sequence: Literal["rows", "pixels"] = "rows", input_size: int = 28, fused: bool = True,
                 drop_rate: float = 0.0, num_classes: int = 10, in_channels: int = 1, nonlinearity: str = "tanh"):
        super().__init__()
        for key, value in (("hidden_size", hidden_size), ("num_layers", num_layers), ("input_size", input_size),
                           ("in_channels", in_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be a positive integer, got {value!r}")
        if sequence not in SEQUENCES:
            raise ValueError(f"sequence must be one of {', '.join(SEQUENCES)} (rows: H steps of C*W features; "
                             f"pixels: H*W steps of C features), got {sequence!r}")
        if not 0 <= drop_rate < 1:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate}")
        self.num_classes, self.in_channels = num_classes, in_channels
        self.hidden_size, self.bidirectional, self.sequence, self.input_size = (hidden_size, bidirectional, sequence,
                                                                                input_size)
        features = in_channels * input_size if sequence == "rows" else in_channels  # per time step
        common = {"num_layers": num_layers, "batch_first": True, "dropout": drop_rate if num_layers > 1 else 0.0,
                  "bidirectional": bidirectional, "fused": fused}
        if self.cell == "rnn":
            self.rnn = RNN(features, hidden_size, nonlinearity=nonlinearity, **common)
        else:
            self.rnn = (LSTM if self.cell == "lstm" else GRU)(features, hidden_size, **common)
        self.num_features = hidden_size * (2 if bidirectional else 1)
        self.head = ClassifierHead(self.num_features, num_classes, pool_type="", drop_rate=drop_rate)  # dropout, fc
        # one "stage": the top layer's outputs at every step, (B, T, num_features)
        self.feature_info = [{"num_chs": self.num_features, "reduction": 1, "module": "rnn"}]

    def to_sequence(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, T, F): H steps of C*W features (rows) or H*W steps of C features (pixels)."""
        b, c, h, w = x.shape
        if self.sequence == "pixels":
            return x.flatten(2).transpose(1, 2)  # (B, C, H*W) -> (B, H*W, C), raster order
        if w != self.input_size:  # deviation: other widths are pooled to the input layer's columns
            x = F.adaptive_avg_pool2d(x, (h, self.input_size))
        return x.permute(0, 2, 1, 3).reshape(b, h, c * self.input_size)  # row t of every channel -> x_t

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(self.to_sequence(x))  # (B, T, F) -> (B, T, hidden x directions)
        return out

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        h = self.hidden_size
        # the final state: the forward direction after the last step, the backward one after the first
        x = torch.cat([x[:, -1, :h], x[:, 0, h:]], dim=-1) if self.bidirectional else x[:, -1]
        return self.head(x, pre_logits=pre_logits)  # (B, num_features) -> dropout -> fc


class SequenceRNN(SequenceClassifier):
    """Elman RNN over the image's rows (``nonlinearity``: tanh, or relu as in Le et al.)."""

    cell = "rnn"

    def __init__(self, *, hidden_size: int = 128, num_layers: int = 1, bidirectional: bool = False,
                 sequence: Literal["rows", "pixels"] = "rows", input_size: int = 28, fused: bool = True,
                 drop_rate: float = 0.0, nonlinearity: Literal["tanh", "relu"] = "tanh", num_classes: int = 10,
                 in_channels: int = 1):
        super().__init__(hidden_size=hidden_size, num_layers=num_layers, bidirectional=bidirectional,
                         sequence=sequence, input_size=input_size, fused=fused, drop_rate=drop_rate,
                         num_classes=num_classes, in_channels=in_channels, nonlinearity=nonlinearity)


class SequenceLSTM(SequenceClassifier):
    """LSTM over the image's rows."""

    cell = "lstm"

    def __init__(self, *, hidden_size: int = 128, num_layers: int = 1, bidirectional: bool = False,
                 sequence: Literal["rows", "pixels"] = "rows", input_size: int = 28, fused: bool = True,
                 drop_rate: float = 0.0, num_classes: int = 10, in_channels: int = 1):
        super().__init__(hidden_size=hidden_size, num_layers=num_layers, bidirectional=bidirectional,
                         sequence=sequence, input_size=input_size, fused=fused, drop_rate=drop_rate,
                         num_classes=num_classes, in_channels=in_channels)


class SequenceGRU(SequenceLSTM):
    """GRU over the image's rows."""

    cell = "gru"


_SEQ_DEVIATION = ("reads the image row by row (28 steps of 28 pixels; sequence='pixels' gives Le et al.'s 784 steps); "
                  "images of another width are average-pooled to 28 columns")
# Adam + clipping by norm (Le et al. clip gradients), 15 epochs: measured on mnist5k over seeds 0-4 (README). On top
# of the dataset's recipe (mnist5k: batch 32, one-cycle schedule, +-2 px translations); its L2 decay is off.
_RECIPE = {"optim.name": "adam", "optim.lr": 0.003, "optim.weight_decay": 0.0, "optim.grad_clip": 1.0,
           "train.epochs": 15}


@register_model(SequenceRNN, paper=ELMAN, input_size=(1, 28, 28),
                dataset="MNIST read as a sequence (Le et al. 2015)",
                deviations=("tanh units (Elman's were logistic) and full back-propagation through time",
                            _SEQ_DEVIATION, "trained with Adam and gradient clipping (card recipe)"),
                recipe=_RECIPE)
def rnn_mnist(**kwargs) -> SequenceRNN:
    """Elman RNN (tanh, 128 units) reading MNIST row by row."""
    return SequenceRNN(**kwargs)


@register_model(SequenceLSTM, paper=LSTM_PAPER, input_size=(1, 28, 28),
                dataset="MNIST read as a sequence (Le et al. 2015)",
                deviations=("forget gate (Gers et al. 2000), no peepholes, full back-propagation through time",
                            _SEQ_DEVIATION, "trained with Adam and gradient clipping (card recipe)"),
                recipe=_RECIPE)
def lstm_mnist(**kwargs) -> SequenceLSTM:
    """LSTM (128 units, forget gate) reading MNIST row by row."""
    return SequenceLSTM(**kwargs)


@register_model(SequenceGRU, paper=GRU_PAPER, input_size=(1, 28, 28),
                dataset="MNIST read as a sequence (Le et al. 2015)",
                deviations=("torch's GRU: reset gate applied after the recurrent product (cuDNN's form)",
                            _SEQ_DEVIATION, "trained with Adam and gradient clipping (card recipe)"),
                recipe=_RECIPE)
def gru_mnist(**kwargs) -> SequenceGRU:
    """GRU (128 units) reading MNIST row by row."""
    return SequenceGRU(**kwargs)
