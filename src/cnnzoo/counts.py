"""Stored counts of every registered network at its defaults: parameters, MACs, input and output shape.

Counting builds the network (on the meta device: no memory, no init) and, for MACs, traces a forward pass: about
10 s of CPU for the parameters of the whole zoo and 30 s more for the MACs. `cnnzoo list`, `cnnzoo info NAME` and
`cnnzoo list --plot` show the counts at the default options, so they read them from ``models/_counts.json``,
computed once by::

    python -m cnnzoo.counts            # every registered network (about a minute)
    python -m cnnzoo.counts NAME ...   # only these (and any registered network the file lacks)

tests/test_stored_counts.py checks every stored entry against the built network and fails for a network that is
registered without an entry (its message gives the command). A count with options (``cnnzoo info NAME -o ...``)
is always computed live, as is any count the file lacks (a damaged or missing file only costs time).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path
from typing import Any

COUNTS_FILE = Path(__file__).parent / "models" / "_counts.json"
FIELDS = ("params", "macs", "input", "output")
REGENERATE = "python -m cnnzoo.counts"


@functools.cache
def _table() -> dict[str, dict[str, Any]]:
    try:
        doc = json.loads(COUNTS_FILE.read_text(encoding="utf-8"))
        networks = doc["networks"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return networks if isinstance(networks, dict) else {}


def stored(name: str) -> dict[str, Any] | None:
    """The stored counts of ``name`` at its defaults (``params``, ``macs`` at batch 1, ``input`` (C, H, W) the card's
    size with the network's channels, ``output`` shape for one image in eval mode); None when the file lacks a
    well-formed entry."""
    entry = _table().get(name)
    if not isinstance(entry, dict) or set(entry) != set(FIELDS):
        return None
    return {"params": entry["params"], "macs": entry["macs"], "input": tuple(entry["input"]),
            "output": tuple(entry["output"])}


def build_meta(name: str, **options: Any):
    """A network built on the meta device: shapes and counts without memory or init cost."""
    import torch

    from .registry import create_model

    with torch.device("meta"):
        return create_model(name, **options)


def count_params(name: str, **options: Any) -> int:
    """Every parameter of ``name`` built with ``options``: the stored count at the defaults, else counted live."""
    if not options:
        entry = stored(name)
        if entry is not None:
            return entry["params"]
    return sum(p.numel() for p in build_meta(name, **options).parameters())


def compute(name: str, *, macs: bool = True) -> dict[str, Any]:
    """The counts of ``name`` at its defaults, computed from the built network (what `stored` returns)."""
    import torch

    from .registry import get_card

    card = get_card(name)
    model = build_meta(name).eval()
    c, h, w = getattr(model, "in_channels", card.input_size[0]), card.input_size[1], card.input_size[2]
    with torch.no_grad():
        out = model(torch.empty(1, c, h, w, device="meta"))
    entry = {"params": sum(p.numel() for p in model.parameters()), "macs": None, "input": (c, h, w),
             "output": tuple(out.shape)}
    if macs:
        from .analysis.summary import summarize

        entry["macs"] = summarize(model, card.input_size).macs  # as `cnnzoo list --plot` traces it
    return entry


def write(names: list[str] | None = None, *, path: Path = COUNTS_FILE, log=print) -> Path:
    """Compute ``names`` (None: every registered network) and the networks the file lacks; keep the other stored
    entries; drop the entries of names no longer registered. Written atomically."""
    from .fileio import atomic_write
    from .registry import list_models

    registered = list_models()
    old = dict(_table()) if path == COUNTS_FILE else {}
    todo = registered if names is None else sorted(set(names) | (set(registered) - set(old)))
    networks = {n: old[n] for n in registered if n in old}
    for i, name in enumerate(todo, 1):
        log(f"[{i}/{len(todo)}] {name}")
        networks[name] = compute(name)
    doc = {"about": f"parameters, MACs (batch 1), input (C, H, W) and output shape of every registered network at "
                    f"its defaults; written by `{REGENERATE}`, checked by tests/test_stored_counts.py",
           "networks": {n: {k: list(v) if isinstance(v, tuple) else v for k, v in networks[n].items()}
                        for n in sorted(networks)}}
    text = "{\n" + f'  "about": {json.dumps(doc["about"])},\n  "networks": {{\n'
    text += ",\n".join(f"    {json.dumps(n)}: {json.dumps(e)}" for n, e in doc["networks"].items())
    text += "\n  }\n}\n"
    atomic_write(path, text.encode("utf-8"))
    _table.cache_clear()
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cnnzoo.counts", description=__doc__.split("\n\n")[0])
    p.add_argument("names", nargs="*", metavar="NAME", help="recompute only these (default: every network)")
    args = p.parse_args(argv)
    from .registry import UnknownModelError, get_card

    try:
        for n in args.names:
            get_card(n)
    except UnknownModelError as e:
        print(f"{p.prog}: error: {e}", file=sys.stderr)
        return 2
    path = write(args.names or None, log=lambda s: print(s, file=sys.stderr))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
