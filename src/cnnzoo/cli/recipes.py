"""`cnnzoo recipes`: the papers' training recipes shipped with cnnzoo (`cnnzoo.train.paper_recipes`)."""

from __future__ import annotations

import argparse
import json

EPILOG = """\
examples:
  cnnzoo recipes                              # every recipe: networks, paper section, key settings
  cnnzoo recipes vgg16                        # the recipe vgg16 trains with under --recipe paper (its YAML)
  cnnzoo recipes --format markdown            # the table as markdown
  cnnzoo train resnet20_cifar --data cifar10 --recipe paper --epochs 30   # the schedule scaled to 30 epochs"""


def _table(recipes, fmt: str) -> str | None:
    rows = [(r.name, ", ".join(r.networks), r.paper, r.dataset, r.key_settings()) for r in recipes]
    if fmt == "markdown":
        head = "| recipe | networks | paper | data | key settings |\n| --- | --- | --- | --- | --- |\n"
        return head + "".join(f"| {a} | {b} | {c} | {d} | {e} |\n" for a, b, c, d, e in rows)
    from rich import box
    from rich.console import Console
    from rich.table import Table

    # Names are copied into commands: a recipe's and each network's name is kept whole (a list of networks wraps
    # between names, at its ", "); the other columns wrap, folding a long word rather than cutting it with "…".
    console = Console()  # the terminal's width (COLUMNS where set), 80 when there is none
    name_w = max(len(r[0]) for r in rows)
    nets_w = max(len(n) for r in recipes for n in r.networks) + 1  # + the comma
    data_w = max(len(r[3]) for r in rows)
    rest = max(console.width - name_w - nets_w - data_w - 2 * 4, 24)  # two characters between columns
    paper_w = max(12, rest * 2 // 5)
    table = Table(title="paper recipes (cnnzoo train NAME --recipe paper)", box=box.SIMPLE_HEAD, show_edge=False,
                  pad_edge=False, padding=(0, 1, 0, 0))
    table.add_column("recipe", no_wrap=True, width=name_w)
    table.add_column("networks", overflow="fold", width=nets_w)
    table.add_column("paper", overflow="fold", width=paper_w)
    table.add_column("data", no_wrap=True, width=data_w)
    table.add_column("key settings", overflow="fold", width=rest - paper_w)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    return None


def cmd_recipes(args: argparse.Namespace) -> int:
    from ..train.paper_recipes import get_paper_recipe, list_paper_recipes, paper_recipe_for

    recipes = list_paper_recipes()
    if args.name is None:
        if args.format == "json":
            print(json.dumps([{"name": r.name, "title": r.title, "paper": r.paper, "networks": r.registered(),
                               "dataset": r.dataset, "settings": r.values, "per_network": r.per_network,
                               "not_applied": list(r.not_applied)} for r in recipes], indent=1))
            return 0
        text = _table(recipes, args.format)
        if text:
            print(text, end="")
        return 0
    names = {r.name for r in recipes}
    if args.name not in names and args.name.strip().lower() in names:  # `cnnzoo recipes VGG`
        args.name = args.name.strip().lower()
    if args.name in names:
        recipe = get_paper_recipe(args.name)
    else:
        from ..registry import UnknownModelError, get_card

        try:
            get_card(args.name)
        except UnknownModelError as e:  # NAME may be either: say both, with the registry's suggestions
            guess = str(e).split("Did you mean", 1)
            hint = f" (did you mean{guess[1].split('?')[0]}?)" if len(guess) > 1 else ""
            raise ValueError(f"unknown network {args.name!r}, and no paper recipe has that name{hint}; recipes: "
                             f"{', '.join(sorted(names))}; networks: see `cnnzoo list`") from None
        recipe = paper_recipe_for(args.name)
        if recipe is None:
            raise ValueError(f"{args.name} has no paper recipe; recipes: {', '.join(sorted(names))} (a network "
                             f"name or a recipe name; `cnnzoo recipes` lists them)")
    if args.format == "json":
        settings = recipe.values if args.name == recipe.name else recipe.settings_for(args.name)
        print(json.dumps({"name": recipe.name, "paper": recipe.paper, "networks": recipe.registered(),
                          "dataset": recipe.dataset, "settings": settings, "not_applied": list(recipe.not_applied)},
                         indent=1))
        return 0
    print(f"# {recipe.title} ({recipe.name}): {recipe.paper}")
    print(f"# networks: {', '.join(recipe.registered())}")
    print(f"# file: {recipe.path}")
    print(recipe.path.read_text(encoding="utf-8"), end="")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("recipes", help="the papers' training recipes (for `cnnzoo train NAME --recipe paper`)",
                       description="List the paper recipes shipped with cnnzoo, or show one (by recipe or network "
                                   "name) with the comments citing the paper's sections.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", nargs="?", help="a recipe name (e.g. resnet_cifar) or a network name (e.g. vgg16)")
    p.add_argument("--format", choices=("table", "markdown", "json"), default="table")
    p.set_defaults(func=cmd_recipes)


__all__ = ["register"]
