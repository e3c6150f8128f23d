"""`cnnzoo arith animate` and `cnnzoo.analysis.animate`: convolution arithmetic drawn to GIFs.

The sizes are checked against an independent source, torch's own ``conv2d`` / ``conv_transpose2d`` run on real
tensors: the number of frames, the output grid drawn in the last frame and the GIF read back. The drawn input grid
(padding, the zeros a transposed convolution inserts) is checked value for value: the convolution it shows,
computed with ``conv2d`` on that grid, equals torch's convolution (Dumoulin & Visin 2016, Relationship 14 for the
transposed case). Bad input through ``cnnzoo.cli.main.main``: exit 2, one line, the workspace unchanged.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import test_cli_errors
from cnnzoo.analysis import animate as A
from test_cli_errors import assert_one_clear_error, run_cli, snapshot

ws = test_cli_errors.ws  # the battery's fixture: a working directory whose files must survive


def torch_out(n: int, k: int, s: int, p: int, d: int, transposed: bool = False, a: int = 0) -> int | None:
    """The output side torch gives for an n x n input (None where torch refuses the configuration)."""
    x = torch.zeros(1, 1, n, n)
    w = torch.zeros(1, 1, k, k)
    try:
        if transposed:
            y = F.conv_transpose2d(x, w, stride=s, padding=p, output_padding=a, dilation=d)
        else:
            y = F.conv2d(x, w, stride=s, padding=p, dilation=d)
    except RuntimeError:
        return None
    assert y.shape[-1] == y.shape[-2]
    return y.shape[-1] if y.shape[-1] > 0 else None


def paddings(k: int, d: int):
    """0..k-1 and the words half and full, with their numbers by hand: half = floor(span/2), full = span - 1
    (Dumoulin & Visin Sec. 2.2.1-2.2.2, span = d(k-1)+1)."""
    span = d * (k - 1) + 1
    return [(p, p) for p in range(k)] + [("half", span // 2), ("full", span - 1)]


DIRECT = [(n, k, s, p, d) for k in range(1, 6) for s in (1, 2, 3) for d in (1, 2, 3) for n in (5,)
          for p in paddings(k, d)]
TRANSPOSED = [(n, k, s, p, d, a) for k in range(1, 6) for s in (1, 2, 3) for d in (1, 2, 3) for n in (2, 3)
              for p in range(k) for a in range(max(s, d)) if a < 2]


def drawn_output_side(frame: Image.Image) -> tuple[int, int]:
    """(rows, columns) of the output grid in the last frame, counted from the pixels: every output cell is filled
    (computed, or the current one), cells separated by border lines, so a column through the first output column
    crosses one run of filled pixels per row of cells, and a row through the first output row one per column."""
    filled = np.isin(np.asarray(frame), [A.DONE, A.CURRENT])
    ys, xs = np.nonzero(filled)

    def runs(line: np.ndarray) -> int:
        return int(line[0]) + int(np.count_nonzero(line[1:] & ~line[:-1]))

    return runs(filled[:, xs.min()]), runs(filled[ys.min(), :])


def check_frames(frames, out: int) -> None:
    assert len(frames) == out * out
    assert drawn_output_side(frames[-1]) == (out, out)


# ------------------------------------------------------------------------------------------ sizes against torch
@pytest.mark.parametrize("k", range(1, 6))
def test_direct_frames_and_drawn_output_match_torch_conv2d(k):
    for n, kk, s, (p, p_num), d in DIRECT:
        if kk != k:
            continue
        want = torch_out(n, k, s, p_num, d)
        if want is None:  # torch refuses: so do we, with a ValueError (one line at the CLI)
            with pytest.raises(ValueError):
                A.animate_convolution(n, k, s, p, d)
            continue
        frames = A.animate_convolution(n, k, s, p, d, cell=8)
        check_frames(frames, want)


@pytest.mark.parametrize("stride", (1, 2, 3))
@pytest.mark.parametrize("k", range(1, 6))
def test_transposed_frames_and_drawn_output_match_torch_conv_transpose2d(k, stride):
    seen = 0
    for n, kk, s, p, d, a in TRANSPOSED:
        if (kk, s) != (k, stride):
            continue
        want = torch_out(n, k, s, p, d, transposed=True, a=a)
        if want is None:
            with pytest.raises(ValueError):
                A.animate_convolution(n, k, s, p, d, transposed=True, output_padding=a)
            continue
        if want * want > A.MAX_FRAMES or (n > 2 and want > 12):  # keep the drawing fast: n=2 covers the big ones
            continue
        frames = A.animate_convolution(n, k, s, p, d, transposed=True, output_padding=a, cell=8)
        check_frames(frames, want)
        seen += 1
    assert seen >= 4


def test_half_and_full_padding_words_are_the_papers():
    """Dumoulin & Visin Sec. 2.2.1: half padding keeps the size (odd k, unit stride); Sec. 2.2.2: full padding
    grows it by k - 1."""
    for k in (1, 3, 5):
        assert len(A.animate_convolution(5, k, padding="half")) == 5 * 5
        assert len(A.animate_convolution(5, k, padding="same")) == 5 * 5
        assert len(A.animate_convolution(5, k, padding="full")) == (5 + k - 1) ** 2
    with pytest.raises(ValueError, match="odd"):
        A.conv_layout(5, 4, padding="same")


# ------------------------------------------------------------------- the drawn grid is the convolution, value for value
def grid_tensor(layout: A.Layout, x: torch.Tensor) -> torch.Tensor:
    """The drawn input grid as a tensor: x's values at the input cells (in order), zero at padding and at the zeros
    inserted between inputs."""
    idx = [i for i, c in enumerate(layout.cells) if c == "in"]
    assert len(idx) == x.shape[-1]
    g = x.new_zeros(1, 1, len(layout.cells), len(layout.cells))
    g[0, 0, torch.tensor(idx)[:, None], torch.tensor(idx)[None, :]] = x[0, 0]
    return g


def test_drawn_grid_computes_torch_conv2d():
    torch.manual_seed(0)
    for n, k, s, (p, p_num), d in DIRECT:
        if torch_out(n, k, s, p_num, d) is None:
            continue
        lay = A.conv_layout(n, k, s, p, d)
        assert lay.cells == ("pad",) * p_num + ("in",) * n + ("pad",) * p_num  # p each side
        x, w = torch.randn(1, 1, n, n, dtype=torch.float64), torch.randn(1, 1, k, k, dtype=torch.float64)
        drawn = F.conv2d(grid_tensor(lay, x), w, stride=lay.step, dilation=d)
        torch.testing.assert_close(drawn, F.conv2d(x, w, stride=s, padding=p_num, dilation=d))


def test_transposed_is_stride1_conv_of_stretched_padded_input():
    """Relationship 14 (generalised to dilation): conv_transpose2d(x, w, S, P, A, D) = conv2d of x with S-1 zeros
    between its cells, padded D(K-1)-P before and D(K-1)-P+A after, with w flipped, stride 1, dilation D."""
    torch.manual_seed(0)
    checked = 0
    for n, k, s, p, d, a in TRANSPOSED:
        if torch_out(n, k, s, p, d, True, a) is None:
            continue
        lay = A.conv_layout(n, k, s, p, d, transposed=True, output_padding=a)
        assert lay.step == 1
        inner = lay.cells[lay.cells.index("in"): len(lay.cells) - lay.cells[::-1].index("in")]
        assert inner.count("zero") == (n - 1) * (s - 1)  # s-1 zeros between neighbouring inputs
        pad = d * (k - 1) - p
        if pad >= 0:  # the paper's k-p-1 for d=1; a negative pad' is a crop
            stretched = (n - 1) * s + 1
            assert lay.cells[:pad] == ("pad",) * pad and lay.cells[pad] == "in"
            assert lay.cells[pad + stretched:] == ("pad",) * (pad + a) and len(lay.cells) == 2 * pad + stretched + a
        x, w = torch.randn(1, 1, n, n, dtype=torch.float64), torch.randn(1, 1, k, k, dtype=torch.float64)
        drawn = F.conv2d(grid_tensor(lay, x), w.flip(-1, -2), stride=1, dilation=d)
        want = F.conv_transpose2d(x, w, stride=s, padding=p, output_padding=a, dilation=d)
        torch.testing.assert_close(drawn, want)
        checked += 1
    assert checked > 100


def test_transposed_with_more_padding_than_the_kernel_span_crops():
    """P > D(K-1): the equivalent direct convolution crops the stretched input (torch allows it)."""
    torch.manual_seed(0)
    lay = A.conv_layout(4, 2, 3, padding=2, transposed=True)
    assert lay.output == torch_out(4, 2, 3, 2, 1, True)
    x, w = torch.randn(1, 1, 4, 4, dtype=torch.float64), torch.randn(1, 1, 2, 2, dtype=torch.float64)
    stretched = torch.zeros(1, 1, 10, 10, dtype=torch.float64)
    stretched[..., ::3, ::3] = x
    cropped = stretched[..., 1:-1, 1:-1]  # pad' = 1 - 2 = -1
    torch.testing.assert_close(F.conv2d(cropped, w.flip(-1, -2)),
                               F.conv_transpose2d(x, w, stride=3, padding=2))
    assert len(lay.cells) == cropped.shape[-1]


# ---------------------------------------------------------------------------------------------- GIF and presets
def test_gif_round_trips_with_one_frame_per_output_position(tmp_path):
    frames = A.animate_convolution(5, 3, 2, 1)
    path = A.save_gif(frames, tmp_path / "c.gif", fps=4)
    with Image.open(path) as im:
        assert im.format == "GIF" and im.n_frames == torch_out(5, 3, 2, 1, 1) ** 2 == 9
        assert im.info["loop"] == 0 and im.info["duration"] == 250
    assert not list(tmp_path.glob(".*.tmp"))  # atomic: no temporary file left


def test_every_case_matches_torch_and_is_listed_in_help():
    for name, (_, kw) in A.CASES.items():
        lay = A.conv_layout(**kw)
        p = A.resolve_padding(kw.get("padding", 0), kw["kernel"], kw.get("dilation", 1))
        want = torch_out(kw["input"], kw["kernel"], kw.get("stride", 1), p, kw.get("dilation", 1),
                         kw.get("transposed", False))
        assert lay.output == want, name
    odd = A.conv_layout(**A.CASES["padding-strides-odd"][1])  # Dumoulin & Visin Fig. 2.7: the last padding is unread
    last = (odd.output - 1) * odd.step + odd.span - 1
    assert last == len(odd.cells) - 2 and odd.cells[-1] == "pad" and odd.cells[last] == "in"
    code, out, _ = run_cli(["arith", "animate", "--help"])
    assert code == 0
    for name in A.CASES:
        assert name in out
    assert {"no-padding-no-strides", "arbitrary-padding", "half-padding", "full-padding", "no-padding-strides",
            "padding-strides", "dilation", "transposed"} <= set(A.CASES)


def test_cli_writes_the_gif_and_refuses_to_overwrite_without_force(ws):
    code, out, err = run_cli(["arith", "animate", "--kernel", "3", "--stride", "2", "--transposed", "--input", "3",
                              "--out", "t.gif"])
    assert code == 0, err
    want = torch_out(3, 3, 2, 0, 1, True)
    assert f"output {want}x{want}" in out
    with Image.open(ws / "t.gif") as im:
        assert im.n_frames == want * want
    before = snapshot(ws)
    code, out, err = run_cli(["arith", "animate", "--case", "half-padding", "--out", "t.gif"])
    line = assert_one_clear_error(code, out, err, ("t.gif exists", "--force"))
    assert len(err.strip().splitlines()) == 1, line
    assert snapshot(ws) == before
    code, out, err = run_cli(["arith", "animate", "--case", "half-padding", "--out", "t.gif", "--force"])
    assert code == 0, err
    with Image.open(ws / "t.gif") as im:
        assert im.n_frames == 25


BAD = [
    (["--kernel", "0", "--input", "5"], ("--kernel", ">= 1", "'0'")),
    (["--kernel", "x", "--input", "5"], ("--kernel", "whole number")),
    (["--kernel", "7", "--input", "3"], ("impossible configuration", "more padding")),
    (["--kernel", "3", "--input", "2", "--padding", "5", "--transposed"], ("output size", "< 1")),
    (["--kernel", "3", "--input", "3", "--stride", "2", "--transposed", "--output-padding", "2"],
     ("--output-padding must be smaller than the stride or the dilation",)),
    (["--kernel", "3", "--input", "3", "--output-padding", "1"], ("only applies to a transposed",)),
    (["--kernel", "3", "--input", "3", "--padding", "lots"], ("--padding", "valid, half, same, full")),
    (["--kernel", "4", "--input", "5", "--padding", "same"], ("'same'", "odd", "half")),
    (["--kernel", "3"], ("--input", "--case")),
    (["--case", "nope"], ("'nope' is not a case", "half-padding")),
    (["--kernel", "3", "--input", "60"], ("at most 64 cells",)),
    (["--case", "dilation", "--fps", "nan"], ("--fps must be a finite number",)),
    (["--case", "dilation", "--fps", "0"], ("--fps", "(0, 50]")),
]


@pytest.mark.parametrize("argv,expect", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_numbers_are_one_line_exit_2(argv, expect, ws):
    before = snapshot(ws)
    code, out, err = run_cli(["arith", "animate", *argv, "--out", "c.gif"])
    assert_one_clear_error(code, out, err, expect)
    assert len(err.strip().splitlines()) == 1, err
    assert snapshot(ws) == before


@pytest.mark.parametrize("out,expect", [
    ("missing/c.gif", ("'missing' does not exist",)),
    ("c.png", ("must end in .gif",)),
    ("empty", ("is a directory",)),
    (None, ("give --out",)),
])
def test_bad_out_is_one_line_exit_2(out, expect, ws):
    before = snapshot(ws)
    code, o, err = run_cli(["arith", "animate", "--case", "half-padding", *(["--out", out] if out else [])])
    assert_one_clear_error(code, o, err, expect)
    assert len(err.strip().splitlines()) == 1, err
    assert snapshot(ws) == before


def test_library_does_not_import_the_cli():
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(A))
    names = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    names += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert names and not [m for m in names if "cli" in m.split(".")], names


def test_grid_covers_note_cases():
    """The parameter grid of the size tests covers k 1-5, s 1-3, d 1-3, p 0..k-1 with half and full, and transposed
    with every output padding below the stride (or dilation) up to 1."""
    ks = {c[1] for c in DIRECT}
    assert ks == set(range(1, 6)) and {c[2] for c in DIRECT} == {1, 2, 3} and {c[4] for c in DIRECT} == {1, 2, 3}
    assert {"half", "full"} <= {c[3][0] for c in DIRECT}
    assert {c[5] for c in TRANSPOSED} == {0, 1}
    assert all(a < s or a < d for _n, _k, s, _p, d, a in TRANSPOSED)
