"""Recurrent layers written from their equations (note 002), with torch's fused kernels as the other path.

The recurrences, for an input sequence x_1..x_T and a state that starts at zero (or the ``hx`` given):

- RNN (Elman 1990): h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh). Note 002 writes
  h_t = tanh(W_hh h_{t-1} + W_xh x_t) (no bias); ``nonlinearity="relu"`` swaps tanh for ReLU (Le et al. 2015).
- LSTM (Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al. 2000), the gates stacked in torch's order
  i, f, g, o in W_ih (4H x in) and W_hh (4H x H)::

      i_t = sigmoid(W_ii x_t + b_ii + W_hi h_{t-1} + b_hi)     input gate
      f_t = sigmoid(W_if x_t + b_if + W_hf h_{t-1} + b_hf)     forget gate
      g_t = tanh(W_ig x_t + b_ig + W_hg h_{t-1} + b_hg)        candidate cell (the note's C^_t)
      o_t = sigmoid(W_io x_t + b_io + W_ho h_{t-1} + b_ho)     output gate
      c_t = f_t * c_{t-1} + i_t * g_t
      h_t = o_t * tanh(c_t)

  The note writes each gate as W . [h_{t-1}, x_t] + b: one matrix on the concatenation, the same map as
  W_ih x + W_hh h split in two.
- GRU (Cho et al. 2014), gates in torch's order r, z, n::

      r_t = sigmoid(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)     reset gate
      z_t = sigmoid(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)     update gate
      n_t = tanh(W_in x_t + b_in + r_t * (W_hn h_{t-1} + b_hn))
      h_t = (1 - z_t) * n_t + z_t * h_{t-1}

Where note 002 and torch differ, these layers follow torch, so torch's checkpoints load and the two paths agree:

- two biases per gate (b_ih and b_hh; the note has one, or none for the RNN and GRU). For the RNN and LSTM only
  their sum matters; for the GRU's candidate, b_hn sits inside the reset product.
- the GRU's reset gate multiplies W_hn h_{t-1} + b_hn, after the matrix product (cuDNN's form, torch's): the note
  (and Cho et al., Section 2.3) reset the state before it, n_t = tanh(W [r_t * h_{t-1}, x_t]). The two differ as
  functions; neither is a special case of the other.
- the GRU's update gate keeps the old state: h_t = (1 - z_t) n_t + z_t h_{t-1}, as in Cho et al. and torch; the
  note's h_t = (1 - z_t) h_{t-1} + z_t h^_t is the same cell with z replaced by 1 - z.

Layers (`RNN`, `LSTM`, `GRU`) and cells (`RNNCell`, `LSTMCell`, `GRUCell`) are subclasses of torch's modules: the
same constructor arguments, parameter names (``weight_ih_l0``, ``weight_hh_l0``, ``bias_ih_l0``, ``bias_hh_l0``,
``..._reverse`` for the backward direction of a bidirectional layer; ``weight_ih``... for cells), initialisation
(U(-1/sqrt(H), 1/sqrt(H)) for every parameter) and outputs, plus one keyword, ``fused``:

- ``fused=True`` (default): torch's own kernels (oneDNN on the CPU, cuDNN on GPUs), as ``torch.nn.LSTM`` runs.
- ``fused=False``: the equations above, step by step in Python (the input term W_ih x_t + b_ih of every step in one
  matrix product first, as the fused kernels do), multi-layer and bidirectional, with dropout between layers.

Given the same weights the two paths give the same outputs and gradients (float64: to rounding; the tests check
1e-6 relative). The equations path takes padded tensors only (no ``PackedSequence``) and no ``proj_size``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GRU", "LSTM", "RNN", "GRUCell", "LSTMCell", "RNNCell", "gru_cell", "lstm_cell", "rnn_cell"]

State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


# ----------------------------------------------------------------------------- one step of each recurrence
# ``xw`` is the input term W_ih x_t + b_ih, computed for all steps at once by the layers.


def _rnn_step(xw: torch.Tensor, h: torch.Tensor, w_hh, b_hh, nonlinearity: str) -> torch.Tensor:
    a = xw + F.linear(h, w_hh, b_hh)  # W_ih x_t + b_ih + W_hh h_{t-1} + b_hh
    return torch.tanh(a) if nonlinearity == "tanh" else torch.relu(a)


def _lstm_step(xw: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor], w_hh, b_hh):
    h, c = state
    i, f, g, o = (xw + F.linear(h, w_hh, b_hh)).chunk(4, dim=-1)  # torch's gate order: i, f, g, o
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    c = f * c + i * g  # forget part of the old cell, add the gated candidate
    return o * torch.tanh(c), c


def _gru_step(xw: torch.Tensor, h: torch.Tensor, w_hh, b_hh) -> torch.Tensor:
    x_r, x_z, x_n = xw.chunk(3, dim=-1)  # torch's gate order: r, z, n
    h_r, h_z, h_n = F.linear(h, w_hh, b_hh).chunk(3, dim=-1)
    r = torch.sigmoid(x_r + h_r)
    z = torch.sigmoid(x_z + h_z)
    n = torch.tanh(x_n + r * h_n)  # torch/cuDNN: reset after the product W_hn h + b_hn (module docstring)
    return (1 - z) * n + z * h


def rnn_cell(x, h, w_ih, w_hh, b_ih=None, b_hh=None, nonlinearity: str = "tanh") -> torch.Tensor:
    """One step of the RNN: h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh) (or ReLU)."""
    return _rnn_step(F.linear(x, w_ih, b_ih), h, w_hh, b_hh, nonlinearity)


def lstm_cell(x, state, w_ih, w_hh, b_ih=None, b_hh=None) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of the LSTM: ``state`` = (h_{t-1}, c_{t-1}) -> (h_t, c_t)."""
    return _lstm_step(F.linear(x, w_ih, b_ih), state, w_hh, b_hh)


def gru_cell(x, h, w_ih, w_hh, b_ih=None, b_hh=None) -> torch.Tensor:
    """One step of the GRU: h_{t-1} -> h_t."""
    return _gru_step(F.linear(x, w_ih, b_ih), h, w_hh, b_hh)


# ----------------------------------------------------------------------------- layers


class _Fusable:
    """``fused``: a layer or cell runs torch's own kernels (the class next in the MRO), or ``_forward_equations``."""

    fused: bool

    def forward(self, input, hx=None):
        return super().forward(input, hx) if self.fused else self._forward_equations(input, hx)

    def _init_fused(self, fused: bool) -> None:
        if not isinstance(fused, bool):
            raise ValueError(
                f"fused must be True (torch's kernels) or False (the equations), got {fused!r}")
        if not fused and getattr(self, "proj_size", 0):
            raise ValueError("proj_size (an LSTM with projections) runs only with fused=True")
        self.fused = fused


class _Equations(_Fusable):
    """The from-equations forward shared by the three layers (mixed into subclasses of ``nn.RNNBase``)."""

    def extra_repr(self) -> str:
        return super().extra_repr() + ("" if self.fused else ", fused=False")

    def _step(self, xw, state, w_hh, b_hh):
        if self.mode == "LSTM":
            return _lstm_step(xw, state, w_hh, b_hh)
        if self.mode == "GRU":
            return _gru_step(xw, state, w_hh, b_hh)
        return _rnn_step(xw, state, w_hh, b_hh, "tanh" if self.mode == "RNN_TANH" else "relu")

    def _check(self, x, hx):
        name = type(self).__name__
        if isinstance(x, nn.utils.rnn.PackedSequence):
            raise ValueError(
                f"{name}(fused=False) takes padded (T, B, F) tensors, not a PackedSequence; pad it "
                f"(torch.nn.utils.rnn.pad_packed_sequence) or use fused=True")
        if not isinstance(x, torch.Tensor) or x.ndim not in (2, 3):
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            layout = "(B, T, F)" if self.batch_first else "(T, B, F)"
            raise ValueError(f"{name} expects a {layout} or unbatched (T, F) tensor, got {shape}")
        if x.shape[-1] != self.input_size:
            raise ValueError(f"{name} was built for input_size={self.input_size} features per step, got "
                             f"{x.shape[-1]} (input shape {tuple(x.shape)})")
        steps = x.shape[1 if self.batch_first and x.ndim == 3 else 0]
        if steps < 1:
            raise ValueError(f"{name} needs a sequence of at least one step, got input shape {tuple(x.shape)}")

    def _forward_equations(self, x: torch.Tensor, hx: State | None):
        self._check(x, hx)
        unbatched = x.ndim == 2
        if unbatched:  # (T, F) -> (T, 1, F)
            x = x.unsqueeze(1)
            if hx is not None:
                hx = tuple(h.unsqueeze(1) for h in hx) if isinstance(hx, tuple) else hx.unsqueeze(1)
        elif self.batch_first:
            x = x.transpose(0, 1)  # (B, T, F) -> (T, B, F): time first inside
        steps, batch = x.shape[:2]
        dirs = 2 if self.bidirectional else 1
        lstm = self.mode == "LSTM"
        want = (self.num_layers * dirs, batch, self.hidden_size)
        if hx is None:
            h0 = x.new_zeros(want)
            hx = (h0, h0) if lstm else h0
        for h in hx if lstm else (hx,):
            if tuple(h.shape) != want:
                raise ValueError(f"{type(self).__name__}: the initial state must have shape {want} "
                                 f"(num_layers * directions, batch, hidden_size), got {tuple(h.shape)}")
        layer_in, h_n, c_n = x, [], []
        for layer in range(self.num_layers):
            outs = []
            for d in range(dirs):
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                w_ih, w_hh = getattr(self, "weight_ih" + sfx), getattr(self, "weight_hh" + sfx)
                b_ih, b_hh = (None, None)
                if self.bias:
                    b_ih, b_hh = getattr(self, "bias_ih" + sfx), getattr(self, "bias_hh" + sfx)
                k = layer * dirs + d
                state = (hx[0][k], hx[1][k]) if lstm else hx[k]
                xw = F.linear(layer_in, w_ih, b_ih)  # (T, B, G*H): W_ih x_t + b_ih for every step at once
                ys: list = [None] * steps
                for t in range(steps) if d == 0 else reversed(range(steps)):  # backward direction: x_T first
                    state = self._step(xw[t], state, w_hh, b_hh)
                    ys[t] = state[0] if lstm else state
                outs.append(torch.stack(ys))  # (T, B, H)
                h_n.append(state[0] if lstm else state)
                if lstm:
                    c_n.append(state[1])
            layer_in = torch.cat(outs, dim=-1) if dirs == 2 else outs[0]  # (T, B, dirs*H): [forward, backward]
            if self.dropout and self.training and layer < self.num_layers - 1:  # between layers, as torch does
                layer_in = F.dropout(layer_in, self.dropout, training=True)
        out, h_n = layer_in, torch.stack(h_n)
        state = (h_n, torch.stack(c_n)) if lstm else h_n
        if unbatched:
            out = out.squeeze(1)
            state = tuple(s.squeeze(1) for s in state) if lstm else state.squeeze(1)
        elif self.batch_first:
            out = out.transpose(0, 1)
        return out, state


class RNN(_Equations, nn.RNN):
    """Elman RNN, h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh): ``torch.nn.RNN`` plus ``fused``."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh",
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 *, fused: bool = True, device=None, dtype=None):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__(input_size, hidden_size, num_layers, nonlinearity=nonlinearity, bias=bias,
                         batch_first=batch_first, dropout=dropout, bidirectional=bidirectional, device=device,
                         dtype=dtype)
        self._init_fused(fused)


class LSTM(_Equations, nn.LSTM):
    """LSTM with a forget gate (module docstring): ``torch.nn.LSTM`` plus ``fused``."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, proj_size: int = 0,
                 *, fused: bool = True, device=None, dtype=None):
        super().__init__(input_size, hidden_size, num_layers, bias=bias, batch_first=batch_first, dropout=dropout,
                         bidirectional=bidirectional, proj_size=proj_size, device=device, dtype=dtype)
        self._init_fused(fused)


class GRU(_Equations, nn.GRU):
    """GRU, torch's form (module docstring): ``torch.nn.GRU`` plus ``fused``."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 *, fused: bool = True, device=None, dtype=None):
        super().__init__(input_size, hidden_size, num_layers, bias=bias, batch_first=batch_first, dropout=dropout,
                         bidirectional=bidirectional, device=device, dtype=dtype)
        self._init_fused(fused)


# ----------------------------------------------------------------------------- cells (one step)


class _CellEquations(_Fusable):
    """The from-equations forward of the cells: (B, F) or unbatched (F,) input, state zero when not given."""

    def extra_repr(self) -> str:
        return super().extra_repr() + ("" if self.fused else ", fused=False")

    def _forward_equations(self, x: torch.Tensor, hx):
        name = type(self).__name__
        if not isinstance(x, torch.Tensor) or x.ndim not in (1, 2) or x.shape[-1] != self.input_size:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"{name} expects a (B, {self.input_size}) or ({self.input_size},) tensor, got {shape}")
        unbatched = x.ndim == 1
        if unbatched:
            x = x.unsqueeze(0)
            if hx is not None:
                hx = tuple(h.unsqueeze(0) for h in hx) if isinstance(hx, tuple) else hx.unsqueeze(0)
        if hx is None:
            h0 = x.new_zeros(x.shape[0], self.hidden_size)
            hx = (h0, h0) if isinstance(self, nn.LSTMCell) else h0
        args = (self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
        if isinstance(self, nn.LSTMCell):
            out = lstm_cell(x, hx, *args)
            return tuple(o.squeeze(0) for o in out) if unbatched else out
        out = gru_cell(x, hx, *args) if isinstance(self, nn.GRUCell) else rnn_cell(x, hx, *args, self.nonlinearity)
        return out.squeeze(0) if unbatched else out


class RNNCell(_CellEquations, nn.RNNCell):
    """One RNN step: ``torch.nn.RNNCell`` plus ``fused``."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh", *,
                 fused: bool = True, device=None, dtype=None):
        super().__init__(input_size, hidden_size, bias, nonlinearity, device=device, dtype=dtype)
        self._init_fused(fused)


class LSTMCell(_CellEquations, nn.LSTMCell):
    """One LSTM step: ``torch.nn.LSTMCell`` plus ``fused``."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, *, fused: bool = True, device=None,
                 dtype=None):
        super().__init__(input_size, hidden_size, bias, device=device, dtype=dtype)
        self._init_fused(fused)


class GRUCell(_CellEquations, nn.GRUCell):
    """One GRU step: ``torch.nn.GRUCell`` plus ``fused``."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, *, fused: bool = True, device=None,
                 dtype=None):
        super().__init__(input_size, hidden_size, bias, device=device, dtype=dtype)
        self._init_fused(fused)
