"""What `cnnzoo compare` is asked to train: ``SPEC`` strings parsed into `Spec` records, checked before any training.

The syntax of a SPEC::

    NAME[:OPTION=VALUE[,OPTION=VALUE...]][@SECTION.KEY=VALUE[@SECTION.KEY=VALUE...]]

- ``NAME`` is a registered network (`cnnzoo list`).
- After ``:`` come network options, comma-separated, each read as ``cnnzoo train -o OPTION=VALUE`` reads it (YAML:
  ``lrn=false``, ``drop_rate=0.2``, ``shortcut=B``, ``layers=[2,2,2,2]``; commas inside brackets, braces or quotes
  do not separate options).
- After each ``@`` comes one config override of this spec only, read as ``--set SECTION.KEY=VALUE``, e.g.
  ``lenet5@train.label_smoothing=0.1`` or ``resnet20_cifar@train.mix={name: mixup}`` (quote it for the shell).
  The seed, the run directory, the network name and the dataset are the comparison's own (``--seeds``, ``--out``,
  ``NAME``, ``--data``) and cannot be set per spec.

The label of a spec in tables and plots is its text with spaces removed; the run directories are named after it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

__all__ = ["RESERVED_KEYS", "Spec", "parse_spec", "parse_specs"]

#: config keys a comparison sets itself (per spec they would break "same data, same seeds, one directory per run")
RESERVED_KEYS = {
    "train.seed": "the seeds come from --seeds",
    "train.run_dir": "compare puts each run under --out",
    "model.name": "the network is the spec's NAME",
    "data.name": "every spec trains on the same --data",
}


@dataclass(frozen=True)
class Spec:
    """One entry of a comparison: a network, its options (as ``-o`` strings) and config overrides (``--set``)."""

    text: str
    name: str
    options: tuple[str, ...] = ()
    overrides: tuple[str, ...] = field(default=())

    @property
    def label(self) -> str:
        return self.text

    @property
    def slug(self) -> str:
        """A directory name for the spec: the label with characters other than ``[A-Za-z0-9_.-]`` replaced, and a
        short hash of the label when anything was replaced (so that two specs never share a directory)."""
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.text).strip("_.") or "spec"
        if safe == self.text and len(safe) <= 80:
            return safe
        return f"{safe[:72]}-{hashlib.sha1(self.text.encode()).hexdigest()[:6]}"


def _split_top(text: str, sep: str) -> list[str]:
    """``text`` split at ``sep`` outside brackets, braces, parentheses and quotes."""
    parts, depth, quote, cur = [], 0, None, []
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth = max(0, depth - 1)
        elif ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    parts.append("".join(cur))
    return parts


SYNTAX = "NAME[:OPTION=VALUE[,OPTION=VALUE...]][@SECTION.KEY=VALUE...], e.g. alexnet_paper:lrn=false"


def parse_spec(text: str) -> Spec:
    """``"resnet20_cifar:shortcut=B@train.label_smoothing=0.1"`` -> Spec; a ValueError naming what is wrong.

    Only the syntax is checked here; `check_specs` checks names, options and overrides against the registry and
    the config.
    """
    if not isinstance(text, str):
        raise ValueError(f"a spec must be a string like {SYNTAX}; got {text!r}")
    compact = "".join(_split_top(text.strip(), " ")) if " " in text.strip() else text.strip()
    if not compact:
        raise ValueError(f"empty spec; a spec is {SYNTAX}")
    head, *overrides = _split_top(compact, "@")
    name, colon, opts = head.partition(":")
    name = name.strip()
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError(f"spec {text!r}: {name!r} is not a network name; a spec is {SYNTAX}")
    options: list[str] = []
    if colon:
        if not opts.strip():
            raise ValueError(f"spec {text!r}: nothing after ':'; give OPTION=VALUE pairs or drop the ':'")
        for item in _split_top(opts, ","):
            key, eq, value = item.partition("=")
            if not eq or not key.strip() or not value.strip():
                raise ValueError(f"spec {text!r}: network option {item!r} is not OPTION=VALUE; a spec is {SYNTAX} "
                                 f"(`cnnzoo info {name}` lists the options)")
            options.append(f"{key.strip()}={value.strip()}")
    keys = [o.partition("=")[0] for o in options]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise ValueError(f"spec {text!r}: option {dup[0]!r} is given twice")
    clean: list[str] = []
    for item in overrides:
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or "." not in key or not value.strip():
            raise ValueError(f"spec {text!r}: override {item!r} is not SECTION.KEY=VALUE (e.g. "
                             f"{name}@train.label_smoothing=0.1)")
        if key in RESERVED_KEYS:
            raise ValueError(f"spec {text!r}: {key} cannot be set per spec ({RESERVED_KEYS[key]})")
        if key.startswith("model.options"):
            raise ValueError(f"spec {text!r}: give network options after ':' ({name}:OPTION=VALUE), not as {key}")
        clean.append(f"{key}={value.strip()}")
    return Spec(text=compact, name=name, options=tuple(options), overrides=tuple(clean))


def parse_specs(texts: list[str]) -> list[Spec]:
    """Parse every spec; the same spec twice is an error (it would train into the same directories)."""
    if not texts:
        raise ValueError(f"give at least one spec to compare ({SYNTAX})")
    specs = [parse_spec(t) for t in texts]
    seen: dict[str, str] = {}
    for s in specs:
        if s.slug in seen:
            raise ValueError(f"spec {s.text!r} is given twice" + ("" if seen[s.slug] == s.text else
                                                                   f" (as {seen[s.slug]!r})"))
        seen[s.slug] = s.text
    return specs
