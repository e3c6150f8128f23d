"""Networks and paper variants side by side on the same data, seeds and recipe (``cnnzoo compare``).

    >>> from cnnzoo.compare import run_comparison
    >>> result = run_comparison(["lenet5", "lenet5_paper", "resnet20_cifar:shortcut=B"], "mnist5k",
    ...                         seeds=[0, 1, 2], out="cmp", sets=["train.epochs=5"])
    >>> result.files["report"]       # cmp/report.html; also cmp/results.csv, cmp/results.json

Each spec x seed trains into ``OUT/runs/SPEC/seedS`` with the ordinary `cnnzoo.train.Trainer` (finished runs are
reused, interrupted ones resumed); see `cnnzoo.compare.spec` for the SPEC syntax, `cnnzoo.compare.runner` for how
runs are planned and run, `cnnzoo.compare.report` for what is measured and written. Specs naming segmentation
networks train as segmentation runs (`cnnzoo.compare.segmentation`).
"""

from .report import aggregate, aggregate_segmentation, print_table, render_html, write_outputs
from .runner import (
    Comparison,
    ComparisonInterrupted,
    RunPlan,
    execute_run,
    measure_run,
    parse_seeds,
    plan_comparison,
    run_comparison,
)
from .segmentation import SegRunPlan, comparison_kind, plan_segmentation
from .spec import Spec, parse_spec, parse_specs

__all__ = ["Comparison", "ComparisonInterrupted", "RunPlan", "SegRunPlan", "Spec", "aggregate",
           "aggregate_segmentation", "comparison_kind", "execute_run", "measure_run", "parse_seeds", "parse_spec",
           "parse_specs", "plan_comparison", "plan_segmentation", "print_table", "render_html", "run_comparison",
           "write_outputs"]
