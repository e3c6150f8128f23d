"""Recurrent layers (RNN, LSTM, GRU from the equations of note 002) and the sequential-MNIST classifiers.

Expected values come from torch.nn.RNN/LSTM/GRU (a peer implementation, for equal weights) and from hand
computations of single steps with Python's math module.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import cnnzoo
from cnnzoo.analysis import summarize
from cnnzoo.layers.recurrent import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell

LAYERS = {"rnn_tanh": (RNN, nn.RNN, {}), "rnn_relu": (RNN, nn.RNN, {"nonlinearity": "relu"}),
          "lstm": (LSTM, nn.LSTM, {}), "gru": (GRU, nn.GRU, {})}


def _pair(kind, fused, dtype=torch.float64, **kw):
    """(ours, torch's) with the same weights: torch's module made first, its state dict loaded into ours."""
    ours_cls, ref_cls, extra = LAYERS[kind]
    ref = ref_cls(5, 6, **extra, **kw, dtype=dtype)
    ours = ours_cls(5, 6, **extra, **kw, fused=fused, dtype=dtype)
    ours.load_state_dict(ref.state_dict())  # torch's checkpoint, strict: same names and shapes
    return ours, ref


def _flat(out):
    y, state = out
    return [y, *(state if isinstance(state, tuple) else (state,))]


@pytest.mark.parametrize("fused", [False, True], ids=["equations", "fused"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("kind", list(LAYERS))
def test_two_layer_outputs_states_and_gradients_equal_torch(kind, bidirectional, fused):
    torch.manual_seed(0)
    ours, ref = _pair(kind, fused, num_layers=2, bidirectional=bidirectional, batch_first=True)
    x = torch.randn(3, 9, 5, dtype=torch.float64, requires_grad=True)
    xr = x.detach().clone().requires_grad_(True)
    got, want = _flat(ours(x)), _flat(ref(xr))
    assert [t.shape for t in got] == [t.shape for t in want]
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-12)
    sum(t.square().sum() for t in got).backward()
    sum(t.square().sum() for t in want).backward()
    torch.testing.assert_close(x.grad, xr.grad, rtol=1e-6, atol=1e-12)
    for (n, p), (_, q) in zip(ours.named_parameters(), ref.named_parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-6, atol=1e-12, msg=n)


@pytest.mark.parametrize("kind", list(LAYERS))
def test_equations_take_an_initial_state_time_first_and_unbatched_input(kind):
    torch.manual_seed(0)
    ours, ref = _pair(kind, False, num_layers=2, bidirectional=True)
    x = torch.randn(7, 3, 5, dtype=torch.float64)  # (T, B, F): torch's default layout
    h0 = torch.randn(4, 3, 6, dtype=torch.float64)
    hx = (h0, torch.randn_like(h0)) if kind == "lstm" else h0
    for g, w in zip(_flat(ours(x, hx)), _flat(ref(x, hx))):
        torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-12)
    for g, w in zip(_flat(ours(x[:, 0])), _flat(ref(x[:, 0]))):  # unbatched (T, F)
        torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-12)


def test_float32_paths_agree_to_float32_rounding():
    torch.manual_seed(0)
    for kind in LAYERS:
        ours, ref = _pair(kind, False, dtype=torch.float32, num_layers=2, bidirectional=True)
        x = torch.randn(4, 28, 5)
        for g, w in zip(_flat(ours(x)), _flat(ref(x))):
            torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cls,ref_cls", [(RNNCell, nn.RNNCell), (LSTMCell, nn.LSTMCell), (GRUCell, nn.GRUCell)])
def test_cells_equal_torch_cells(cls, ref_cls):
    torch.manual_seed(0)
    ref = ref_cls(5, 6, dtype=torch.float64)
    ours = cls(5, 6, fused=False, dtype=torch.float64)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(3, 5, dtype=torch.float64)
    h = torch.randn(3, 6, dtype=torch.float64)
    state = (h, torch.randn_like(h)) if cls is LSTMCell else h
    for args in ((x,), (x, state), (x[0],)):  # zero state, a given state, unbatched
        got, want = ours(*args), ref(*args)
        for g, w in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
            torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-12)


# --- the equations, by hand (one unit, so every term is a number) -------------------------------------------------


def _sig(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def _set(module: nn.Module, **values) -> None:
    with torch.no_grad():
        for name, v in values.items():
            getattr(module, name).copy_(torch.tensor(v, dtype=torch.float64).reshape(getattr(module, name).shape))


@pytest.mark.parametrize("fused", [False, True])
def test_rnn_is_tanh_of_the_recurrence_by_hand(fused):
    """Note 002: h_t = tanh(W_hh h_{t-1} + W_xh x_t) (+ torch's two biases), two steps of one unit."""
    rnn = RNN(1, 1, fused=fused, dtype=torch.float64)
    _set(rnn, weight_ih_l0=0.5, weight_hh_l0=-0.8, bias_ih_l0=0.1, bias_hh_l0=0.2)
    out, _ = rnn(torch.tensor([[1.0], [2.0]], dtype=torch.float64))
    h1 = math.tanh(0.5 * 1.0 + 0.1 + 0.2)
    h2 = math.tanh(0.5 * 2.0 + 0.1 - 0.8 * h1 + 0.2)
    assert out.flatten().tolist() == pytest.approx([h1, h2], rel=1e-12)


@pytest.mark.parametrize("fused", [False, True])
def test_lstm_gates_and_cell_by_hand(fused):
    """f, i, o = sigmoid(.), C~ = tanh(.), C_t = f C_{t-1} + i C~, h_t = o tanh(C_t) (note 002), gates in torch's
    order i, f, g, o."""
    lstm = LSTM(1, 1, fused=fused, dtype=torch.float64)
    w_x, w_h, b = [0.3, -0.4, 0.9, 0.2], [0.5, 0.6, -0.7, 0.1], [0.05, 1.0, -0.1, 0.2]
    _set(lstm, weight_ih_l0=w_x, weight_hh_l0=w_h, bias_ih_l0=b, bias_hh_l0=[0.0] * 4)
    x, h0, c0 = 1.5, -0.5, 2.0
    _, (h, c) = lstm(torch.tensor([[x]], dtype=torch.float64),
                     (torch.tensor([[h0]], dtype=torch.float64), torch.tensor([[c0]], dtype=torch.float64)))
    pre = [w_x[k] * x + w_h[k] * h0 + b[k] for k in range(4)]
    i, f, g, o = _sig(pre[0]), _sig(pre[1]), math.tanh(pre[2]), _sig(pre[3])
    c1 = f * c0 + i * g
    assert (h.item(), c.item()) == pytest.approx((o * math.tanh(c1), c1), rel=1e-12)


@pytest.mark.parametrize("fused", [False, True])
def test_gru_is_torchs_form_by_hand(fused):
    """r, z = sigmoid(.), n = tanh(W_in x + b_in + r (W_hn h + b_hn)), h_t = (1 - z) n + z h_{t-1}: torch's GRU,
    whose reset gate acts after the product (with b_hn != 0 the note's r-before-product form gives another value)."""
    gru = GRU(1, 1, fused=fused, dtype=torch.float64)
    w_x, w_h, b_x, b_h = [0.3, -0.4, 0.9], [0.5, 0.6, -0.7], [0.1, 0.2, 0.3], [-0.2, 0.4, 0.8]
    _set(gru, weight_ih_l0=w_x, weight_hh_l0=w_h, bias_ih_l0=b_x, bias_hh_l0=b_h)
    x, h0 = 1.5, -0.5
    _, h = gru(torch.tensor([[x]], dtype=torch.float64), torch.tensor([[h0]], dtype=torch.float64))
    r = _sig(w_x[0] * x + b_x[0] + w_h[0] * h0 + b_h[0])
    z = _sig(w_x[1] * x + b_x[1] + w_h[1] * h0 + b_h[1])
    n = math.tanh(w_x[2] * x + b_x[2] + r * (w_h[2] * h0 + b_h[2]))
    assert h.item() == pytest.approx((1 - z) * n + z * h0, rel=1e-12)
    n_note = math.tanh(w_x[2] * x + b_x[2] + w_h[2] * (r * h0) + b_h[2])  # reset before the product
    assert abs(h.item() - ((1 - z) * n_note + z * h0)) > 1e-3


# --- checkpoints, options, errors ---------------------------------------------------------------------------------


def test_torch_state_dicts_load_with_torchs_names():
    ref = nn.LSTM(28, 16, num_layers=2, bidirectional=True, batch_first=True)
    ours = LSTM(28, 16, num_layers=2, bidirectional=True, batch_first=True, fused=False)
    assert list(ours.state_dict()) == list(ref.state_dict())
    assert {"weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0", "weight_ih_l1_reverse"} <= set(ref.state_dict())
    ours.load_state_dict(ref.state_dict())
    model = cnnzoo.create_model("lstm_mnist", hidden_size=16, num_layers=2, bidirectional=True).eval()
    model.rnn.load_state_dict(ref.state_dict())  # a torch.nn.LSTM trained elsewhere becomes the network's layer
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        _, h_n = ref(x.squeeze(1))
        features = model.forward_head(model.forward_features(x), pre_logits=True)
    # the head reads the top layer's final states: forward direction (h_n[-2]) then backward (h_n[-1])
    torch.testing.assert_close(features, torch.cat([h_n[0][-2], h_n[0][-1]], dim=-1))


def test_dropout_acts_between_layers_in_training_only():
    torch.manual_seed(0)
    lstm = LSTM(5, 6, num_layers=2, dropout=0.5, fused=False)
    x = torch.randn(4, 2, 5)
    lstm.train()
    assert not torch.equal(lstm(x)[0], lstm(x)[0])
    lstm.eval()
    ref = nn.LSTM(5, 6, num_layers=2, dropout=0.5).eval()
    ref.load_state_dict(lstm.state_dict())
    torch.testing.assert_close(lstm(x)[0], ref(x)[0], rtol=1e-5, atol=1e-6)
    one = LSTM(5, 6, num_layers=1, fused=False).train()  # one layer: no dropout anywhere
    assert torch.equal(one(x)[0], one(x)[0])


def test_bad_input_and_options_are_clear_errors():
    lstm = LSTM(5, 6, fused=False)
    with pytest.raises(ValueError, match="input_size=5 features per step, got 4"):
        lstm(torch.randn(3, 2, 4))
    with pytest.raises(ValueError, match=r"initial state must have shape \(1, 2, 6\)"):
        lstm(torch.randn(3, 2, 5), (torch.zeros(1, 3, 6), torch.zeros(1, 3, 6)))
    packed = nn.utils.rnn.pack_sequence([torch.randn(3, 5), torch.randn(2, 5)])
    with pytest.raises(ValueError, match="PackedSequence"):
        lstm(packed)
    with pytest.raises(ValueError, match="at least one step"):
        lstm(torch.randn(0, 2, 5))
    with pytest.raises(ValueError, match="fused must be True"):
        GRU(5, 6, fused="yes")
    with pytest.raises(ValueError, match="proj_size"):
        LSTM(5, 6, proj_size=3, fused=False)
    with pytest.raises(ValueError, match="'tanh' or 'relu'"):
        RNN(5, 6, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="option sequence must be one of 'rows', 'pixels', got 'columns'"):
        cnnzoo.create_model("gru_mnist", sequence="columns")
    with pytest.raises(ValueError, match="hidden_size must be a positive integer"):
        cnnzoo.create_model("lstm_mnist", hidden_size=0)
    with pytest.raises(cnnzoo.registry.UnknownOptionError, match="nonlinearity"):
        cnnzoo.create_model("lstm_mnist", nonlinearity="relu")  # an RNN option only


# --- the image as a sequence --------------------------------------------------------------------------------------


def test_rows_are_time_steps_of_every_channels_pixels():
    model = cnnzoo.create_model("gru_mnist", in_channels=2, input_size=4)
    x = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(1, 2, 3, 4)  # C=2, H=3 rows, W=4
    seq = model.to_sequence(x)
    assert seq.shape == (1, 3, 8)  # H steps of C*W features
    assert seq[0, 1].tolist() == x[0, 0, 1].tolist() + x[0, 1, 1].tolist()  # step 2 = row 2 of channel 1, then 2
    wide = x.repeat_interleave(2, dim=-1)  # 8 columns, each twice: pooled back to the 4 the layer takes
    torch.testing.assert_close(model.to_sequence(wide), seq)
    taller = model.to_sequence(torch.randn(1, 2, 11, 4))
    assert taller.shape == (1, 11, 8)  # any height: the number of steps


def test_pixels_are_le_et_al_raster_order():
    model = cnnzoo.create_model("rnn_mnist", sequence="pixels", hidden_size=8, nonlinearity="relu").eval()
    x = torch.arange(9, dtype=torch.float32).reshape(1, 1, 3, 3)
    assert model.to_sequence(x).flatten().tolist() == list(range(9))  # 9 steps of one pixel, row by row
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert model.rnn.input_size == 1 and model.rnn.nonlinearity == "relu"


@pytest.mark.parametrize("name", ["rnn_mnist", "lstm_mnist", "gru_mnist"])
def test_fused_and_equations_classifiers_give_the_same_logits(name):
    torch.manual_seed(0)
    eq = cnnzoo.create_model(name, fused=False, num_layers=2, bidirectional=True, hidden_size=32).eval()
    fu = cnnzoo.create_model(name, fused=True, num_layers=2, bidirectional=True, hidden_size=32).eval()
    fu.load_state_dict(eq.state_dict())
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(eq(x), fu(x), rtol=1e-5, atol=1e-5)


# --- the summary: parameters and MACs per time step and in total ----------------------------------------------------


@pytest.mark.parametrize("name,gates", [("rnn_mnist", 1), ("lstm_mnist", 4), ("gru_mnist", 3)])
def test_summary_counts_per_step_and_total_by_hand(name, gates):
    steps, width, hidden = 28, 28, 128
    per_step = gates * hidden * (width + hidden)  # W_ih x_t and W_hh h_{t-1}, every gate
    params = gates * hidden * (width + hidden) + 2 * gates * hidden + hidden * 10 + 10
    with torch.device("meta"):
        meta = cnnzoo.create_model(name)
    s = summarize(meta, (1, 28, 28))
    assert s.total_params == params
    assert s.macs == steps * per_step + hidden * 10
    assert s.per_step() == [{"name": "rnn", "steps": steps, "macs": steps * per_step, "macs_per_step": per_step,
                             "params": params - hidden * 10 - 10}]
    # on the CPU the fused LSTM runs oneDNN's kernel, which FlopCounterMode does not count: the summary does
    assert summarize(cnnzoo.create_model(name), (1, 28, 28), device="cpu").macs == s.macs


def test_summary_of_a_bidirectional_two_layer_lstm_on_the_cpu():
    model = cnnzoo.create_model("lstm_mnist", hidden_size=16, num_layers=2, bidirectional=True)
    s = summarize(model, (1, 20, 28), device="cpu")
    layer1 = 2 * 4 * 16 * (28 + 16)  # two directions
    layer2 = 2 * 4 * 16 * (32 + 16)  # the input is both directions' outputs
    assert s.per_step()[0]["steps"] == 20 and s.macs == 20 * (layer1 + layer2) + 32 * 10


def test_cli_summary_prints_the_per_step_line(capsys):
    from cnnzoo.cli.main import main

    assert main(["summary", "lstm_mnist", "--depth", "1"]) == 0
    out = capsys.readouterr().out
    assert "recurrent layer rnn: 28 time steps x 79,872 MACs per step = 2,236,416 MACs" in out
    assert "80,896 parameters are shared by every step" in out
