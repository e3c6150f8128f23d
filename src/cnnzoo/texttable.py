"""Tables that fit the terminal: a table wider than the screen is folded into several, one under the other.

A wide table (`cnnzoo compare`, `cnnzoo compare-arch`) printed on an 80-column terminal would otherwise be squeezed
by rich into columns a few characters wide, its headers and numbers cut or broken across lines. `fitted_tables`
keeps every header and every number whole: the columns go, in their order, into as many tables as the width needs,
each repeating the first ``keep`` columns (the row's name), as `cnnzoo list` keeps its names whole. Only a column
wider than the screen by itself (a long text) wraps.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["GAP", "fitted_tables", "print_fitted"]

GAP = 2
"""Characters between two columns (rich's SIMPLE_HEAD box: one of padding, one of separator)."""


def _table(title: str | None, headers: Sequence[str], justify: Sequence[str], widths: Sequence[int | None]):
    from rich import box
    from rich.table import Table

    t = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0))
    for h, j, w in zip(headers, justify, widths):
        if w is None:
            t.add_column(h, justify=j, no_wrap=True)
        else:  # as wide as its widest cell or header word: the header wraps at its spaces (a long text: folds)
            t.add_column(h, justify=j, width=w, overflow="fold")
    return t


def fitted_tables(title: str | None, headers: Sequence[str], rows: Sequence[Sequence[str]], width: int, *,
                  keep: int = 1, justify: Sequence[str] | None = None) -> list:
    """rich Tables holding ``rows`` under ``headers``, each at most ``width`` characters wide (see the module
    docstring): one table when everything fits, else the columns after the first ``keep`` spread over several.
    ``justify``: "left"/"right" per column (default left)."""
    justify = list(justify or ["left"] * len(headers))
    natural = [max([len(str(h))] + [len(str(r[i])) for r in rows]) for i, h in enumerate(headers)]
    if sum(natural) + GAP * (len(headers) - 1) <= width:
        return [_fill(_table(title, headers, justify, [None] * len(headers)), rows, range(len(headers)))]
    # narrower: a header may take two lines (it wraps at its spaces), its cells never do
    natural = [max([max(map(len, str(h).split()), default=0)] + [len(str(r[i])) for r in rows])
               for i, h in enumerate(headers)]
    fixed = list(range(min(keep, len(headers))))
    base = sum(natural[i] for i in fixed) + GAP * len(fixed)
    groups: list[list[int]] = []
    used = base
    for i in range(len(fixed), len(headers)):
        w = natural[i] + GAP
        if groups and used + w - GAP <= width:
            groups[-1].append(i)
            used += w
        else:
            groups.append([i])
            used = base + w
    tables = []
    for n, group in enumerate(groups):
        cols = fixed + group
        room = width - sum(natural[i] for i in fixed) - GAP * (len(cols) - 1)
        widths = [None if i in fixed else min(natural[i], max(room, 8)) for i in cols]
        part = title if n == 0 else None
        if title and len(groups) > 1:
            part = f"{title} ({n + 1}/{len(groups)})"
        tables.append(_fill(_table(part, [headers[i] for i in cols], [justify[i] for i in cols], widths), rows, cols))
    return tables


def _fill(table, rows, cols):
    from rich.markup import escape

    for r in rows:
        table.add_row(*(escape(str(r[i])) for i in cols))  # a spec's "[...]" is text, not markup
    return table


def print_fitted(console, title: str | None, headers: Sequence[str], rows: Sequence[Sequence[str]], *, keep: int = 1,
                 justify: Sequence[str] | None = None) -> None:
    """Print `fitted_tables` at ``console``'s width, a blank line between the parts."""
    for n, table in enumerate(fitted_tables(title, headers, rows, console.width, keep=keep, justify=justify)):
        if n:
            console.print()
        console.print(table)
