"""Stored counts of every registered segmentation network at its defaults: parameters, MACs, input and output shape,
and the receptive field at the output. The segmentation twin of `cnnzoo.counts` (the classification zoo's store).

`cnnzoo list`, `cnnzoo info NAME` and `cnnzoo summary NAME` read them from ``segmentation/models/_counts.json``,
computed once by::

    python -m cnnzoo.segmentation.counts            # every registered segmentation network (several minutes)
    python -m cnnzoo.segmentation.counts NAME ...   # only these (and any registered network the file lacks)

Parameters, MACs and shapes cost a meta-device trace (about a second for all). The receptive field is
`cnnzoo.analysis.output_field`'s: the layer arithmetic where it applies (free), else the input gradient of the
centre output pixel, one real forward and backward at the card's input size (a minute for the biggest networks on
two CPU cores), which is why it is stored. tests/test_segmentation_summary.py checks every entry against the
built network (the field under -m slow) and fails for a registered network without one (its message gives the
command). Counts with options or another input size are computed live, as is anything the file lacks.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path
from typing import Any

COUNTS_FILE = Path(__file__).parent / "models" / "_counts.json"
FIELDS = ("params", "macs", "input", "output", "rf")
REGENERATE = "python -m cnnzoo.segmentation.counts"


@functools.cache
def _table() -> dict[str, dict[str, Any]]:
    try:
        doc = json.loads(COUNTS_FILE.read_text(encoding="utf-8"))
        networks = doc["networks"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return networks if isinstance(networks, dict) else {}


def stored(name: str) -> dict[str, Any] | None:
    """The stored counts of ``name`` at its defaults: ``params``, ``macs`` (batch 1), ``input`` (C, H, W) (the card's),
    ``output`` (the logits' shape for one image, eval mode), ``rf`` (`OutputField.to_dict` without ``whole_input``);
    None when the file lacks a well-formed entry."""
    entry = _table().get(name)
    if not isinstance(entry, dict) or set(entry) != set(FIELDS) or not isinstance(entry["rf"], dict):
        return None
    return {"params": entry["params"], "macs": entry["macs"], "input": tuple(entry["input"]),
            "output": tuple(entry["output"]), "rf": dict(entry["rf"])}


def stored_field(name: str):
    """The stored receptive field of ``name`` at the card's input size as an `OutputField`, or None."""
    from ..analysis.output_field import OutputField

    entry = stored(name)
    if entry is None:
        return None
    try:
        rf = {k: tuple(v) if isinstance(v, list) else v for k, v in entry["rf"].items()}
        return OutputField(**rf)
    except TypeError:
        return None


def build_meta(name: str, **options: Any):
    """A segmentation network built on the meta device: shapes and counts without memory or init cost."""
    import torch

    from .registry import create_segmenter

    with torch.device("meta"):
        return create_segmenter(name, **options)


def count_params(name: str, **options: Any) -> int:
    """Every parameter of ``name`` built with ``options``: the stored count at the defaults, else counted live."""
    if not options:
        entry = stored(name)
        if entry is not None:
            return entry["params"]
    return sum(p.numel() for p in build_meta(name, **options).parameters())


def compute(name: str, *, rf: bool = True) -> dict[str, Any]:
    """The counts of ``name`` at its defaults, computed from the built network (what `stored` returns)."""
    from ..analysis.output_field import output_field
    from ..analysis.summary import summarize
    from .registry import get_segmenter_card

    card = get_segmenter_card(name)
    model = build_meta(name).eval()
    size = (model.in_channels, card.input_size[1], card.input_size[2])
    s = summarize(model, size)
    out = s._calls[0].output_shape  # the whole network's call: the logits (main ones first in a tuple)
    field = output_field(model, size).to_dict() if rf else None
    if field is not None:
        field.pop("whole_input")
    return {"params": s.total_params, "macs": s.macs, "input": size, "output": tuple(out), "rf": field}


def write(names: list[str] | None = None, *, path: Path = COUNTS_FILE, log=print) -> Path:
    """Compute ``names`` (None: every registered network) and the networks the file lacks; keep the other stored
    entries; drop the entries of names no longer registered. Written atomically."""
    from ..fileio import atomic_write
    from .registry import list_segmenters

    registered = list_segmenters()
    old = dict(_table()) if path == COUNTS_FILE else {}
    todo = registered if names is None else sorted(set(names) | (set(registered) - set(old)))
    networks = {n: old[n] for n in registered if n in old}
    for i, name in enumerate(todo, 1):
        log(f"[{i}/{len(todo)}] {name}")
        networks[name] = compute(name)

    def plain(v):
        return [plain(x) for x in v] if isinstance(v, (tuple, list)) else {k: plain(x) for k, x in v.items()} \
            if isinstance(v, dict) else v

    about = (f"parameters, MACs (batch 1), input (C, H, W), output shape and output receptive field of every "
             f"registered segmentation network at its defaults; written by `{REGENERATE}`, checked by "
             f"tests/test_segmentation_summary.py")
    text = "{\n" + f'  "about": {json.dumps(about)},\n  "networks": {{\n'
    text += ",\n".join(f"    {json.dumps(n)}: {json.dumps(plain(networks[n]))}" for n in sorted(networks))
    text += "\n  }\n}\n"
    atomic_write(path, text.encode("utf-8"))
    _table.cache_clear()
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=f"python -m {__spec__.name if __spec__ else 'cnnzoo.segmentation.counts'}",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("names", nargs="*", metavar="NAME", help="recompute only these (default: every network)")
    args = p.parse_args(argv)
    from ..registry import UnknownModelError
    from .registry import get_segmenter_card

    try:
        for n in args.names:
            get_segmenter_card(n)
    except UnknownModelError as e:
        print(f"{p.prog}: error: {e}", file=sys.stderr)
        return 2
    path = write(args.names or None, log=lambda s: print(s, file=sys.stderr, flush=True))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
