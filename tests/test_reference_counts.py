"""Parameter counts against the published figures (tests/fixtures/reference_numbers.json)."""

from __future__ import annotations

import pytest
import torch

import cnnzoo
from reference_map import STATED_COUNTS, mapped_rows

ROWS = mapped_rows()
EXACT = [(r, n, o) for r, n, o in ROWS if isinstance(r["params"], int)]


def count(name: str, opts: dict) -> int:
    with torch.device("meta"):
        model = cnnzoo.create_model(name, **opts)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("row,name,opts", EXACT, ids=[f"{n}" for _, n, _ in EXACT])
def test_exact_parameter_count(row, name, opts):
    assert count(name, opts) == row["params"], row["params_source"]


@pytest.mark.parametrize("name,opts,expected", STATED_COUNTS, ids=[f"{n}-{o}" for n, o, _ in STATED_COUNTS])
def test_counts_stated_by_the_issues(name, opts, expected):
    assert count(name, opts) == expected
