"""Where a network's parameters and compute go, and how far each layer sees: a per-layer summary.

:func:`summarize` runs one forward pass (on the meta device by default, so VGG or SENet-154 cost
no memory and no arithmetic) under a ``TorchDispatchMode`` that sees every aten op. For each op it

- counts multiply-accumulates with ``torch.utils.flop_counter``'s own formulas (convolutions with
  groups and dilation, ``mm``/``addmm``/``bmm``/``baddbmm`` for linear layers and attention matmuls,
  scaled-dot-product attention), halved: MACs = FLOPs / 2, so the totals equal
  ``FlopCounterMode``'s by construction and follow torchvision's convention (conv + linear + matmul;
  BatchNorm, pooling and activations are not counted). Attention's two products, Q K^T and A V, are
  matmuls and count (ViT-B/16: 12 layers x 2 x 197^2 x 768 = 0.715 GMACs of its 17.56, torchvision's
  figure). On the meta device ``F.scaled_dot_product_attention`` runs as those two ``bmm``s; on a real
  device it runs a fused kernel, which ``FlopCounterMode`` counts with its formula on CUDA but not at all
  on the CPU (``_scaled_dot_product_flash_attention_for_cpu``, torch 2.x, has no formula: 0 FLOPs) nor
  for ``nn.MultiheadAttention``'s fused inference kernel (``_native_multi_head_attention``, projections
  included). The summary counts those with the same formula (QK^T + AV; the projections for the latter),
  so a trace gives the same MACs on every device. One exception: a module that runs a structured
  sparse operation through a dense kernel with zeros (LeNet-5's C3, which connects 60 of the 96 map
  pairs) defines ``count_macs(inputs, output) -> int``, and its row counts what the sparse operation
  computes instead of the dense kernel's multiplications by zero. Recurrent layers: torch's fused RNN kernels
  (oneDNN's ``mkldnn_rnn_layer``, which runs ``nn.LSTM`` on the CPU, cuDNN's ``_cudnn_rnn`` and MIOpen's
  ``miopen_rnn``) have no formula in ``FlopCounterMode`` (0 FLOPs); on the meta device the same layers run as
  per-step ``addmm``s, which it counts. The summary counts the kernels with that arithmetic, (time steps x batch) x
  the sum of the layer's weight matrices (W_ih + W_hh per layer and direction: 4 gates for the LSTM, 3 for the GRU),
  so CPU, GPU and meta traces agree. A recurrent layer's row also records the time steps it ran (``steps``), and
  `Summary.per_step` gives its MACs per step (the same weights run at every step, so its parameters are counted
  once, not per step);
- charges them to the innermost module running, so functional ``F.conv2d`` calls inside a
  module's ``forward`` count for that module;
- propagates receptive fields tensor by tensor (:mod:`cnnzoo.analysis.receptive`), so branches,
  residual sums, concatenations and attention are handled by the same rules.

Forward hooks on every module record each call's input and output shapes and its output's field.
Rows are the leaf modules (plus any non-leaf module whose own ``forward`` runs counted ops);
``depth`` folds them into the modules ``depth`` levels down (a ResNet at depth 1: stem, layer1..4, head).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from dataclasses import field as dc_field

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import flop_registry
from torch.utils.weak import WeakIdKeyDictionary

from .receptive import Field, propagate

__all__ = ["COLUMNS", "LayerRecord", "Summary", "layer_cells", "render_table", "summarize", "totals_lines"]


@dataclass
class LayerRecord:
    """One row of the summary: a layer (or, when folded, a block)."""

    name: str
    type: str
    input_shape: tuple[int, ...] | None
    output_shape: tuple[int, ...] | None
    params: int
    macs: int
    rf: tuple[int, int] | None
    jump: tuple[int, int] | None
    kernel: tuple[int, ...] | None = None
    stride: tuple[int, ...] | None = None
    padding: tuple[int, ...] | str | None = None
    dilation: tuple[int, ...] | None = None
    groups: int | None = None
    depth: int = 0
    steps: int | None = None  # time steps a recurrent layer (torch.nn.RNNBase) ran over; None for other layers


@dataclass
class Summary:
    """Per-layer records and totals of one network at one input size (batch 1).

    Attributes:
        layers: the rows.
        input_size: (C, H, W).
        total_params / trainable_params: every distinct parameter / those with requires_grad.
        macs: multiply-accumulates of conv, linear and matmul ops; ``flops`` = 2 x macs.
        activation_bytes: bytes to hold every leaf layer's output at batch 1 (torchsummary's
            "forward pass size"; an upper bound on what inference keeps alive at once).
        param_bytes: bytes of the parameters.
    """

    layers: list[LayerRecord]
    input_size: tuple[int, int, int]
    total_params: int
    trainable_params: int
    macs: int
    activation_bytes: int
    param_bytes: int
    model_name: str = ""

    @property
    def flops(self) -> int:
        """Floating-point operations = 2 x MACs (a multiply and an add each)."""
        return 2 * self.macs

    def totals(self) -> dict:
        """The totals, each labelled with its unit."""
        return {
            "total_params": self.total_params,
            "trainable_params": self.trainable_params,
            "macs": self.macs,
            "flops (2 x macs)": self.flops,
            "activation_memory_bytes (batch 1)": self.activation_bytes,
            "param_memory_bytes": self.param_bytes,
        }

    def to_dict(self) -> dict:
        return {
            "model": self.model_name,
            "input_size": list(self.input_size),
            "layers": [asdict(r) for r in self.layers],
            "totals": self.totals(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    def fold(self, depth: int) -> Summary:
        """The same summary with its rows folded ``depth`` module levels down (see :func:`summarize`)."""
        if not isinstance(depth, int) or depth < 0:
            raise ValueError(f"depth must be a non-negative integer, got {depth!r}")
        calls = getattr(self, "_calls", None)
        if calls is None:
            raise ValueError("fold() needs a summary made by summarize()")
        out = Summary(
            **{**{k: getattr(self, k) for k in self.__dataclass_fields__}, "layers": _fold(calls, self._rows, depth)}
        )
        out._calls, out._rows = calls, self._rows
        return out

    def stages(self, feature_info: Sequence[dict]) -> list[dict]:
        """The output of each stage a network's ``feature_info`` names, as traced here.

        Returns one dict per stage: ``module``, ``num_chs`` (channels), ``reduction`` (as declared), and ``hw``: the
        stage's spatial size (H, W) -- of the map, or of the patch grid for a token sequence (B, N, C) -- or None
        for a flat vector. ValueError for a module the forward never ran.
        """
        calls = {c.name: c for c in reversed(getattr(self, "_calls", None) or [])}  # first call of each name wins
        if not calls:
            raise ValueError("stages() needs a summary made by summarize()")
        out = []
        for info in feature_info:
            call = calls.get(info["module"])
            if call is None or call.output_shape is None:
                raise ValueError(f"feature_info names {info['module']!r}, which the traced forward did not run")
            shape, f = call.output_shape, call.field
            if len(shape) == 4:
                hw = (shape[2], shape[3])
            elif f is not None and f.tokens is not None:
                hw = f.grid
            else:
                hw = None
            out.append({"module": info["module"], "num_chs": info.get("num_chs"), "reduction": info.get("reduction"),
                        "hw": hw})
        return out

    def per_step(self) -> list[dict]:
        """The recurrent rows (those with ``steps``): ``{"name", "steps", "macs", "macs_per_step", "params"}`` each.

        A recurrent layer runs the same weights at every time step: its MACs are ``steps`` x ``macs_per_step``, and
        its parameters are shared by all steps (counted once).
        """
        rows = getattr(self, "_rows", None) or self.layers  # the unfolded rows: a folded block holds no steps
        return [{"name": r.name, "steps": r.steps, "macs": r.macs, "macs_per_step": r.macs // r.steps,
                 "params": r.params} for r in rows if r.steps]

    def table(self, width: int | None = None) -> str:
        """The table `cnnzoo summary` prints, rows then totals, as text at most ``width`` characters wide (default:
        the terminal's, else 80). Where the full table (13 columns) is wider, a compact one takes its place:
        kernel/stride/padding in one column (``3/1/1``, then ``d2`` and ``g32`` for dilation and groups), counts
        abbreviated (``9.41K``), input shape and jump left out (`to_dict`, ``--format csv`` or a wider terminal
        give them); a layer name that does not fit wraps whole, never cut."""
        return render_table(self, width)

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:  # a REPL or notebook shows the table, as print() does
        return self.table()

    def find(self, name: str) -> LayerRecord:
        """The row named ``name`` (ValueError listing a few names if there is none)."""
        for r in self.layers:
            if r.name == name:
                return r
        raise ValueError(f"no layer {name!r}; layers include: {', '.join(r.name for r in self.layers[:12])}, ...")


@dataclass
class _Call:
    name: str
    module: nn.Module
    input_shape: tuple[int, ...] | None = None
    output_shape: tuple[int, ...] | None = None
    field: Field | None = None
    macs: int = 0  # counted ops run directly in this module's forward (not in its children)
    out_numel: int = 0
    out_bytes: int = 0
    steps: int | None = None
    children: list = dc_field(default_factory=list)


def _first_tensor(x):
    for leaf in tree_flatten(x)[0]:
        if isinstance(leaf, torch.Tensor):
            return leaf
    return None


def _attention_formulas() -> dict:
    """FlopCounterMode's own formulas for the attention kernels it has none for (see the module docstring)."""
    aten = torch.ops.aten
    sdpa = flop_registry.get(aten._scaled_dot_product_flash_attention)
    extra = {}
    for name in ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_fused_attention_overrideable",
                 "_scaled_dot_product_attention_math_for_mps"):
        packet = getattr(aten, name, None)
        if sdpa is not None and packet is not None and packet not in flop_registry:
            extra[packet] = sdpa  # (query, key, value, ...) -> QK^T and AV, as for the CUDA kernels
    if hasattr(aten, "_native_multi_head_attention") and aten._native_multi_head_attention not in flop_registry:
        extra[aten._native_multi_head_attention] = _native_mha_flop
    # fused recurrent kernels (module docstring): oneDNN's takes one layer and direction (W_ih, W_hh, b_ih, b_hh as
    # its 2nd-5th arguments), cuDNN's and MIOpen's the list of every layer's and direction's tensors
    for name, weights in (("mkldnn_rnn_layer", lambda args: args[:2]), ("_cudnn_rnn", lambda args: args[0]),
                          ("miopen_rnn", lambda args: args[0])):
        packet = getattr(aten, name, None)
        if packet is not None and packet not in flop_registry:
            extra[packet] = functools.partial(_fused_rnn_flop, weights)
    return extra


def _fused_rnn_flop(weights, input, *args, out_val=None, **kwargs) -> int:
    """FLOPs of a fused recurrent kernel: at every (step, sequence) position the input and the state meet the
    layer's weight matrices once each (W_ih, W_hh, and an LSTM's projection W_hr: the 2-D tensors of
    ``weights(args)``; biases are additions, not counted)."""
    positions = input.numel() // input.shape[-1]  # T x B (batch-first or not), or the rows of a packed sequence
    return 2 * positions * sum(w.numel() for w in weights(args) if isinstance(w, torch.Tensor) and w.ndim == 2)


def _native_mha_flop(query, key, value, embed_dim, num_heads, qkv_weight, qkv_bias, proj_weight, proj_bias, *args,
                     out_val=None, **kwargs) -> int:
    """FLOPs of torch.nn.MultiheadAttention's fused inference kernel: the Q, K, V and output projections and the
    attention products QK^T and AV (2 FLOPs per multiply-accumulate, FlopCounterMode's convention)."""
    b, length, e = query.shape[0], query.shape[-2], int(embed_dim)
    source = key.shape[-2]
    macs = b * (length + 2 * source) * e * e + b * length * e * e  # W^Q, W^K, W^V, W^O
    macs += 2 * b * length * source * e  # QK^T and AV over all heads (each head d = e / h, h heads)
    return 2 * macs


_EXTRA_FORMULAS = _attention_formulas()


class _Tracer(TorchDispatchMode):
    """Counts MACs per innermost module and propagates receptive fields per tensor."""

    def _field_of(self, t):
        return self.fields.get(t) if isinstance(t, torch.Tensor) else None

    def __init__(self):
        super().__init__()
        self.fields: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self.stack: list[_Call] = []
        self.macs = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func._overloadpacket
        formula = flop_registry.get(packet) or _EXTRA_FORMULAS.get(packet)
        if formula is not None:
            # FlopCounterMode's formula, so the totals agree with it exactly; FLOPs = 2 x MACs.
            macs = formula(*args, **kwargs, out_val=out) // 2
            self.macs += macs
            if self.stack:
                self.stack[-1].macs += macs
        in_fields = [
            self.fields[t] for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor) and t in self.fields
        ]
        if in_fields:
            first_out = _first_tensor(out)
            if first_out is not None:
                f = propagate(func, args, kwargs, in_fields, first_out, field_of=self._field_of)
                if f is not None:
                    for t in tree_flatten(out)[0]:
                        if isinstance(t, torch.Tensor) and t.is_floating_point():
                            self.fields[t] = f
        return out


def _attr(module: nn.Module, name: str):
    v = getattr(module, name, None)
    if v is None or isinstance(v, torch.Tensor):
        return None
    if isinstance(v, str):
        return v
    if isinstance(v, (list, tuple)):
        return tuple(int(x) for x in v)
    return (int(v),)


def summarize(
    model: nn.Module,
    input_size: Sequence[int],
    *,
    depth: int | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> Summary:
    """Trace one forward pass of ``model`` at batch 1 and return its per-layer summary.

    Args:
        model: any ``nn.Module`` taking one image tensor, on any device. It is neither moved nor changed.
        input_size: (C, H, W) of one image.
        depth: fold rows into the modules this many levels down (1: top-level children); None: every layer.
        device: where the traced forward runs. None or "meta": the meta device, which costs nothing; a model
            whose parameters live elsewhere runs there on meta stand-ins of its parameters and buffers, and only
            a forward that cannot run on meta (an op without a meta kernel) runs on the model's own device.
            Another device: the model's parameters must already be there.
        dtype: element type of the input (and the byte sizes reported).

    Raises:
        ValueError: for an input size that is not positive integers, or a depth below 0.
    """
    input_size = tuple(input_size)
    if len(input_size) != 3 or not all(isinstance(d, int) and d > 0 for d in input_size):
        raise ValueError(f"input_size must be (C, H, W) with positive integers, got {input_size!r}")
    if depth is not None and (not isinstance(depth, int) or depth < 0):
        raise ValueError(f"depth must be a non-negative integer or None, got {depth!r}")
    names = {m: n for n, m in model.named_modules(remove_duplicate=False)}
    tracer = _Tracer()
    calls: list[_Call] = []
    seen: dict[str, int] = {}

    def pre_hook(module, inputs):
        name = names.get(module, type(module).__name__)
        n = seen.get(name, 0)
        seen[name] = n + 1
        call = _Call(name if n == 0 else f"{name}({n + 1})", module)
        t = _first_tensor(inputs)
        call.input_shape = tuple(t.shape) if t is not None else None
        if tracer.stack:
            tracer.stack[-1].children.append(call)
        tracer.stack.append(call)
        calls.append(call)

    def post_hook(module, inputs, output):
        call = tracer.stack.pop()
        count = getattr(module, "count_macs", None)
        if callable(count):  # a sparse op run densely: count what it computes, not the zeros (module docstring)
            macs = int(count(inputs, output))
            tracer.macs += macs - call.macs
            call.macs = macs
        if isinstance(module, nn.RNNBase):  # time steps of a recurrent layer (padded input; None when packed)
            x = inputs[0] if inputs else None
            if isinstance(x, torch.Tensor) and x.ndim in (2, 3):
                call.steps = int(x.shape[1] if module.batch_first and x.ndim == 3 else x.shape[0])
        t = _first_tensor(output)
        if t is not None:
            call.output_shape = tuple(t.shape)
            call.field = tracer.fields.get(t)
            call.out_numel = t.numel()
            call.out_bytes = t.numel() * t.element_size()

    handles = []
    for m in model.modules():
        handles.append(m.register_forward_pre_hook(pre_hook))
        handles.append(m.register_forward_hook(post_hook, always_call=True))
    device, stand_ins, own = _placement(model, device)
    was_training = model.training
    model.eval()
    try:
        while True:
            x = torch.zeros((1, *input_size), device=device, dtype=dtype)
            try:
                with torch.no_grad(), tracer:
                    tracer.fields[x] = Field((1, 1), (1, 1), (input_size[1], input_size[2]))
                    if stand_ins is None:
                        model(x)
                    else:  # the user's tensors stay where they are, untouched
                        torch.func.functional_call(model, stand_ins, (x,), strict=False)
                break
            except Exception:
                if stand_ins is None or own is None:
                    raise
                # no meta kernel for some op (or data-dependent Python): trace for real where the model lives
                device, stand_ins, tracer = own, None, _Tracer()
                calls.clear()
                seen.clear()
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)

    params = {id(p): p for p in model.parameters()}
    total = sum(p.numel() for p in params.values())
    trainable = sum(p.numel() for p in params.values() if p.requires_grad)
    param_bytes = sum(p.numel() * p.element_size() for p in params.values())

    counted: set[int] = set()  # a module called twice (a shared ReLU) holds its parameters once

    def own_params(call: _Call, recurse: bool) -> int:
        if id(call.module) in counted:
            return 0
        counted.add(id(call.module))
        return sum(p.numel() for p in call.module.parameters(recurse=recurse))

    rows: list[LayerRecord] = []
    for call in calls:
        # A non-leaf module gets a row of its own only for what its own forward holds or runs
        # (a BatchNormAct's weight, an attention block's matmuls, an F.conv2d in its forward).
        leaf = not any(True for _ in call.module.children())
        params = own_params(call, recurse=leaf)
        if leaf or params or call.macs:
            rows.append(_record(call, params, call.macs, leaf))
    # Modules the forward never ran (aux heads in eval mode) get rows too, so the rows add up.
    covered = {
        id(p)
        for c in calls
        if id(c.module) in counted
        for p in c.module.parameters(recurse=not any(True for _ in c.module.children()))
    }
    called = {id(c.module) for c in calls}
    for name, m in model.named_modules():  # pre-order: the top-most module never run comes first
        ps = list(m.parameters())
        if id(m) not in called and ps and not any(id(p) in covered for p in ps):
            covered.update(id(p) for p in ps)
            rows.append(
                LayerRecord(
                    name=name,
                    type=f"{type(m).__name__} (not run)",
                    input_shape=None,
                    output_shape=None,
                    params=sum(p.numel() for p in ps),
                    macs=0,
                    rf=None,
                    jump=None,
                    depth=name.count(".") + 1,
                )
            )
    activation = sum(c.out_bytes for c in calls if not any(True for _ in c.module.children()))
    summary = Summary(
        layers=rows,
        input_size=input_size,
        total_params=total,
        trainable_params=trainable,
        macs=tracer.macs,
        activation_bytes=activation,
        param_bytes=param_bytes,
        model_name=_model_name(model),
    )
    summary._calls, summary._rows = calls, rows
    if depth is not None:
        summary.layers = _fold(calls, rows, depth)
    return summary


def _placement(model: nn.Module, device) -> tuple[torch.device, dict | None, torch.device | None]:
    """(device to trace on, meta stand-ins for the model's tensors or None, the model's own single device or None)."""
    tensors = dict(model.named_parameters(remove_duplicate=False))
    tensors.update(model.named_buffers(remove_duplicate=False))
    where = {t.device for t in tensors.values()}
    own = next(iter(where)) if len(where) == 1 else None
    device = torch.device("meta" if device is None else device)
    if device.type == "meta":
        if where - {torch.device("meta")}:
            return device, {k: torch.empty_like(t, device="meta") for k, t in tensors.items()}, own
        return device, None, None
    if where and where != {device}:
        raise ValueError(f"the model's parameters are on {', '.join(sorted(map(str, where)))} but device={str(device)!r}; "
                         f"leave device unset (a free trace on the meta device) or pass the model's device")
    return device, None, None


def _model_name(model: nn.Module) -> str:
    cfg = getattr(model, "pretrained_cfg", None)  # set by cnnzoo.create_model
    return cfg["name"] if isinstance(cfg, dict) and "name" in cfg else type(model).__name__


def _record(call: _Call, params: int, macs: int, leaf: bool) -> LayerRecord:
    m = call.module
    name = call.name or "(model)"
    typ = type(m).__name__ + ("" if leaf else " (own ops)" if macs else " (own params)")
    f = call.field
    return LayerRecord(
        name=name,
        type=typ,
        input_shape=call.input_shape,
        output_shape=call.output_shape,
        params=params,
        macs=macs,
        rf=f.rf if f else None,
        jump=f.jump if f else None,
        kernel=_attr(m, "kernel_size"),
        stride=_attr(m, "stride"),
        padding=_attr(m, "padding"),
        dilation=_attr(m, "dilation"),
        groups=getattr(m, "groups", None) if isinstance(getattr(m, "groups", None), int) else None,
        depth=0 if not call.name else call.name.count(".") + 1,
        steps=call.steps,
    )


def _prefix(name: str, depth: int) -> str:
    return ".".join(name.split(".")[:depth])


def _fold(calls: list[_Call], rows: list[LayerRecord], depth: int) -> list[LayerRecord]:
    """Fold rows into the modules ``depth`` levels down; top-level layers around the blocks become stem/head."""
    if depth == 0:
        return [_group("(model)", "model", rows, calls[0] if calls else None)]
    by_name = {c.name: c for c in calls}
    not_run = [r for r in rows if r.type.endswith("(not run)")]
    rows = [r for r in rows if r not in not_run]
    groups: list[tuple[str, list[LayerRecord]]] = []
    for r in rows:
        key = _prefix(r.name, depth) if r.name != "(model)" else r.name
        if groups and groups[-1][0] == key:
            groups[-1][1].append(r)
        else:
            groups.append((key, [r]))
    folded = [_group(key, None, rs, by_name.get(key)) for key, rs in groups]
    if depth > 1:  # rows of blocks' parts: a top-level module's own parameters (ViT's encoder) are no stage
        return folded + not_run
    # Single top-level layers before the first block form the stem, those after the last the head
    # (a ResNet's conv1/bn1/relu/maxpool and avgpool/fc), when the network has blocks at all.
    blocks = [
        i
        for i, r in enumerate(folded)
        if r.type != "layer"
        and "." not in r.name
        and r.name != "(model)"
        and by_name.get(r.name) is not None
        and any(True for _ in by_name[r.name].module.children())
    ]
    if not blocks:
        return folded + not_run
    first, last = blocks[0], blocks[-1]
    out = []
    if first > 0:
        out.append(_merge("stem", folded[:first]))
    out.extend(folded[first : last + 1])
    if last + 1 < len(folded):
        out.append(_merge("head", folded[last + 1 :]))
    return out + not_run


def _group(key: str, typ: str | None, rs: list[LayerRecord], call: _Call | None) -> LayerRecord:
    if len(rs) == 1 and rs[0].name == key:
        r = rs[0]
        return LayerRecord(**{**asdict(r), "type": r.type})
    f = call.field if call is not None else None
    return LayerRecord(
        name=key,
        type=typ or (type(call.module).__name__ if call is not None else "block"),
        input_shape=call.input_shape if call is not None else rs[0].input_shape,
        output_shape=call.output_shape if call is not None else rs[-1].output_shape,
        params=sum(r.params for r in rs),
        macs=sum(r.macs for r in rs),
        rf=f.rf if f else max((r.rf for r in rs if r.rf), default=None),
        jump=f.jump if f else rs[-1].jump,
        depth=key.count(".") + 1,
    )


def _merge(name: str, rs: list[LayerRecord]) -> LayerRecord:
    return LayerRecord(
        name=name,
        type="+".join(dict.fromkeys(r.type for r in rs)) if len(rs) <= 4 else f"{len(rs)} layers",
        input_shape=rs[0].input_shape,
        output_shape=rs[-1].output_shape,
        params=sum(r.params for r in rs),
        macs=sum(r.macs for r in rs),
        rf=rs[-1].rf,
        jump=rs[-1].jump,
        depth=1,
    )


# ------------------------------------------------------------------------------------------------------ text
COLUMNS = ("layer", "type", "kernel", "stride", "pad", "dil", "groups", "input", "output", "params", "MACs", "RF",
           "jump")
"""The columns of the full table (and of ``cnnzoo summary --format csv/markdown``)."""


def _shape(s) -> str:
    return "x".join(map(str, s[1:])) if s else "-"


def _pair(v) -> str:
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    return str(v[0]) if len(set(v)) == 1 else "x".join(map(str, v))


def layer_cells(r: LayerRecord) -> list[str]:
    """One row of the full table, in the order of `COLUMNS`."""
    return [r.name, r.type, _pair(r.kernel), _pair(r.stride), _pair(r.padding), _pair(r.dilation),
            "" if r.groups in (None, 1) else str(r.groups), _shape(r.input_shape), _shape(r.output_shape),
            f"{r.params:,}", f"{r.macs:,}", _pair(r.rf) if r.rf else "-", _pair(r.jump) if r.jump else "-"]


def _short(n: int) -> str:
    """A count in three significant figures: 9.41K, 118M, 1.81G (below 1000 as it is)."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            v = n / scale
            return f"{v:.3g}{unit}" if v < 1000 else f"{v:.0f}{unit}"
    return str(n)


def _geometry(r: LayerRecord) -> str:
    """kernel/stride/padding of a layer that has a kernel, with dilation and groups where they are not 1."""
    if r.kernel is None:
        return ""
    text = "/".join(_pair(v) or "-" for v in (r.kernel, r.stride, r.padding))
    if r.dilation is not None and set(r.dilation) != {1}:
        text += f" d{_pair(r.dilation)}"
    if r.groups not in (None, 1):
        text += f" g{r.groups}"
    return text


def _si(n: int) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.3f} {unit}"
    return str(n)


def totals_lines(s: Summary) -> list[str]:
    """The totals under the table, each labelled with its unit."""
    steps = [f"recurrent layer {r['name']}: {r['steps']} time steps x {r['macs_per_step']:,} MACs per step = "
             f"{r['macs']:,} MACs; its {r['params']:,} parameters are shared by every step" for r in s.per_step()]
    return [
        f"total parameters: {s.total_params:,} (trainable {s.trainable_params:,})",
        f"MACs (multiply-accumulates, conv + linear + matmul): {s.macs:,} = {_si(s.macs)}",
        *steps,
        f"FLOPs (= 2 x MACs): {s.flops:,} = {_si(s.flops)}",
        f"activation memory at batch 1 (every layer's output): {s.activation_bytes / 2**20:.2f} MiB",
        f"parameter memory: {s.param_bytes / 2**20:.2f} MiB",
    ]


def _fits(table, width: int) -> bool:
    import io

    from rich.console import Console

    return Console(width=10_000, file=io.StringIO()).measure(table).maximum <= width


def render_table(s: Summary, width: int | None = None) -> str:
    """The summary as a text table and its totals, at most ``width`` characters wide (see `Summary.table`)."""
    import io

    from rich import box
    from rich.console import Console
    from rich.table import Table

    width = width or Console().width  # the terminal's (COLUMNS where set), 80 when there is none
    c, h, w = s.input_size
    title = f"{s.model_name} at {c}x{h}x{w} (batch 1)"
    table = Table(title=title)
    for col in COLUMNS:
        table.add_column(col, justify="right" if col in ("params", "MACs", "RF", "jump") else "left")
    for r in s.layers:
        table.add_row(*layer_cells(r))
    compact = not _fits(table, width)
    if compact:
        head = ("layer", "type", "k/s/p", "output", "params", "MACs", "RF")
        rows = [(r.name, r.type, _geometry(r), _shape(r.output_shape), _short(r.params), _short(r.macs),
                 _pair(r.rf) if r.rf else "-") for r in s.layers]
        natural = [max(len(x[i]) for x in [head, *rows]) for i in range(len(head))]
        natural[1] = min(natural[1], 18)  # a long type wraps: the names come first
        # the names take what the other columns leave (two characters between columns), wrapping where too long
        name_width = max(12, min(natural[0], width - sum(natural[1:]) - 2 * (len(head) - 1)))
        table = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0))
        table.add_column("layer", overflow="fold", width=name_width)
        table.add_column("type", overflow="fold", max_width=natural[1])
        table.add_column("k/s/p", no_wrap=True)
        table.add_column("output", no_wrap=True)
        for col in ("params", "MACs", "RF"):
            table.add_column(col, justify="right", no_wrap=True)
        for row in rows:
            table.add_row(*row)
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(table)
    if compact:
        console.print("k/s/p: kernel/stride/padding, dN dilation, gN groups (a wider table, or `cnnzoo summary "
                      "--format csv`, also has the input shapes and jumps)", highlight=False)
    for line in totals_lines(s):
        console.print(line, highlight=False)
    return console.export_text()
