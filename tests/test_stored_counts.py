"""The counts `cnnzoo list` / `info` / `list --plot` read from src/cnnzoo/models/_counts.json (cnnzoo.counts).

Each stored entry is checked against the network itself, built on the meta device here (not through
cnnzoo.counts): its parameters, the card's input with the network's channels, and the output shape of a meta
forward. The MACs are checked against hand counts from the papers where tests/macs_by_hand.py has them, and for
every network against a trace under -m slow (the trace of the whole zoo is ~30 s of CPU). A network registered
without an entry, or an entry left for a network no longer registered, fails with the command that rewrites the
file. The everyday commands read the store and build nothing (asserted), and import no plotting or data modules.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

import cnnzoo
from cnnzoo import counts
from cnnzoo.cli.main import main
from macs_by_hand import HARDNET_68, HARDNET_85, hardnet_macs, shufflenet_v1_macs
from reference_map import mapped_rows

NAMES = cnnzoo.list_models()
STORED = json.loads(counts.COUNTS_FILE.read_text(encoding="utf-8"))["networks"]
FIX = f"rewrite the entries with `{counts.REGENERATE} NAME ...` (or `{counts.REGENERATE}` for all)"


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# ------------------------------------------------------------------------------------------ the file is whole
def test_every_registered_network_has_an_entry_and_no_other():
    missing = sorted(set(NAMES) - set(STORED))
    extra = sorted(set(STORED) - set(NAMES))
    assert not missing, f"registered without stored counts: {missing}; {FIX}"
    assert not extra, f"stored counts of networks no longer registered: {extra}; {FIX}"
    for name, entry in STORED.items():
        assert set(entry) == set(counts.FIELDS), f"{name}: fields {sorted(entry)}; {FIX}"
        assert counts.stored(name) is not None


# ---------------------------------------------------------------------------- each entry against the network
@pytest.mark.parametrize("name", NAMES)
def test_stored_params_and_shapes_are_the_built_networks(name):
    """Built on the meta device; the output is (1, num_classes) (tests/test_models.py runs every network's forward;
    the slow case below runs it at the stored input)."""
    entry = STORED.get(name)
    assert entry is not None, f"{name} has no stored counts; {FIX}"
    card = cnnzoo.get_card(name)
    with torch.device("meta"):
        model = cnnzoo.create_model(name)
    built = {"params": sum(p.numel() for p in model.parameters()),
             "input": [model.in_channels, card.input_size[1], card.input_size[2]], "output": [1, model.num_classes]}
    assert {k: entry[k] for k in built} == built, f"{name}: stored counts are stale; {FIX}"


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_stored_output_is_a_forward_at_the_stored_input(name):
    with torch.device("meta"):
        model = cnnzoo.create_model(name).eval()
    with torch.no_grad():
        out = model(torch.empty(1, *STORED[name]["input"], device="meta"))
    assert list(out.shape) == STORED[name]["output"], FIX


EXACT = [(r, n) for r, n, o in mapped_rows() if isinstance(r["params"], int) and not o]


@pytest.mark.parametrize("row,name", EXACT, ids=[n for _, n in EXACT])
def test_stored_params_are_the_published_exact_counts(row, name):
    """Trainable parameters = every parameter here (no network freezes any): tests/fixtures/reference_numbers.json."""
    assert STORED[name]["params"] == row["params"], row["params_source"]


def _lenet5_macs() -> int:
    """LeCun et al. 1998, Sec. II.B (conv + fc, batch 1, 32x32): C1 6@28x28 5x5x1, C3 16@10x10 5x5x6 (full
    connection here), C5 120 5x5x16, F6 84, output 10: 117,600 + 240,000 + 48,000 + 10,080 + 840 = 416,520."""
    return 28 * 28 * 6 * 25 + 10 * 10 * 16 * 25 * 6 + 120 * 25 * 16 + 120 * 84 + 84 * 10


HAND_MACS = {"lenet5": _lenet5_macs(), "hardnet68": hardnet_macs(HARDNET_68), "hardnet85": hardnet_macs(HARDNET_85),
             **{f"shufflenet_v1_g{g}": shufflenet_v1_macs(g) for g in (1, 2, 3, 4, 8)}}


@pytest.mark.parametrize("name", sorted(HAND_MACS))
def test_stored_macs_are_the_hand_counts(name):
    assert STORED[name]["macs"] == HAND_MACS[name]


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_stored_macs_are_a_trace_of_the_network(name):
    from cnnzoo.analysis import summarize

    with torch.device("meta"):
        model = cnnzoo.create_model(name)
    assert STORED[name]["macs"] == summarize(model, cnnzoo.get_card(name).input_size).macs, FIX


# ---------------------------------------------------------------------------------- the commands read the store
@pytest.fixture
def nothing_built(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a network was built")

    monkeypatch.setattr("cnnzoo.registry.create_model", refuse)


def test_list_and_info_read_the_store_and_build_nothing(capsys, monkeypatch, nothing_built):
    table = {**counts._table(), "lenet5": {**STORED["lenet5"], "params": 12_345, "output": [1, 77]}}
    monkeypatch.setattr(counts, "_table", lambda: table)
    code, out, err = run(capsys, "list", "lenet*", "--width", "200")
    assert code == 0, err
    assert "12,345" in next(line for line in out.splitlines() if line.split()[:1] == ["lenet5"])
    code, out, err = run(capsys, "info", "lenet5", "--width", "200")
    assert code == 0, err
    assert "parameters: 12,345\n" in out and "(1, 77) for input (1, 1, 32, 32)" in out


def test_the_zoo_plot_reads_the_store(monkeypatch, nothing_built):
    from cnnzoo.analysis.plots import zoo_points

    monkeypatch.setattr(counts, "_table", lambda: {"lenet5": {**STORED["lenet5"], "params": 12_345, "macs": 678}})
    (point,) = zoo_points(["lenet5"])
    assert (point.name, point.params, point.macs, point.family) == ("lenet5", 12_345, 678, "lenet")


def test_options_and_input_are_counted_live(capsys, monkeypatch):
    monkeypatch.setattr(counts, "_table", lambda: {"lenet5": {**STORED["lenet5"], "params": 12_345}})
    # LeNet-5 with a 3-way output layer: 61,706 less F6 -> output's 7 x (84 + 1) = 61,111 (Sec. II.B)
    code, out, err = run(capsys, "info", "lenet5", "-o", "num_classes=3", "--width", "200")
    assert code == 0, err
    assert "parameters: 61,111 with {'num_classes': 3}" in out and "(1, 3) for input (1, 1, 32, 32)" in out
    code, out, err = run(capsys, "info", "lenet5", "--input", "64", "--width", "200")
    assert code == 0, err
    assert "parameters: 61,706\n" in out and "(1, 10) for input (1, 1, 64, 64)" in out
    assert counts.count_params("lenet5") == 12_345 and counts.count_params("lenet5", num_classes=3) == 61_111


@pytest.mark.parametrize("damage", ["{not json", "[]", '{"networks": []}', '{"networks": {"lenet5": {"params": 1}}}'])
def test_a_damaged_or_missing_store_costs_time_not_answers(tmp_path, monkeypatch, capsys, damage):
    path = tmp_path / "_counts.json"
    path.write_text(damage)
    monkeypatch.setattr(counts, "COUNTS_FILE", path)
    counts._table.cache_clear()
    try:
        assert counts.stored("lenet5") is None
        code, out, _ = run(capsys, "list", "lenet5", "--width", "200")
        assert code == 0 and "61,706" in out
        monkeypatch.setattr(counts, "COUNTS_FILE", tmp_path / "absent.json")
        counts._table.cache_clear()
        assert counts.count_params("lenet5") == 61_706
    finally:
        counts._table.cache_clear()


def test_write_keeps_other_entries_adds_missing_and_drops_unregistered(tmp_path, monkeypatch):
    path = tmp_path / "_counts.json"
    kept = {"params": 1, "macs": 2, "input": [1, 2, 3], "output": [1, 4]}
    old = {n: kept for n in NAMES if n != "lenet5"} | {"gone_net": kept}
    path.write_text(json.dumps({"networks": old}))
    monkeypatch.setattr(counts, "COUNTS_FILE", path)
    counts._table.cache_clear()
    try:
        counts.write(["lenet5_paper"], path=path, log=lambda s: None)
        doc = json.loads(path.read_text())["networks"]
    finally:
        counts._table.cache_clear()
    assert sorted(doc) == NAMES  # gone_net dropped
    assert doc["lenet5"] == {"params": 61_706, "macs": 416_520, "input": [1, 32, 32], "output": [1, 10]}  # was missing
    assert doc["lenet5_paper"]["params"] == 60_000  # asked for (the paper's "60,000 trainable parameters", Sec. II.B)
    assert doc["resnet18"] == kept  # neither asked for nor missing: kept as it was


# ------------------------------------------------------------------------------------------- nothing heavy loaded
_IMPORTS = textwrap.dedent("""
    import contextlib, io, json, sys
    from cnnzoo.cli.main import main
    seen = {}
    for argv in (["--help"], ["list"], ["info", "lenet5"]):
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                main(argv)
            except SystemExit:
                pass
        seen[argv[0]] = sorted({m.split(".")[0] if not m.startswith("cnnzoo.") else ".".join(m.split(".")[:2])
                                for m in sys.modules})
    print(json.dumps(seen))
""")


def test_everyday_commands_import_no_plotting_imaging_or_data_modules():
    """`--help`, `list` and `info` need torch and the registry only: matplotlib, PIL, the data pipeline and the
    evaluation protocols stay unloaded (each costs a noticeable part of a second of CPU)."""
    out = subprocess.run([sys.executable, "-c", _IMPORTS], capture_output=True, text=True, timeout=300, check=True)
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    for command, modules in seen.items():
        loaded = set(modules) & {"matplotlib", "PIL", "cnnzoo.data", "cnnzoo.evaluate", "cnnzoo.train", "yaml"}
        assert not loaded, (command, sorted(loaded))
