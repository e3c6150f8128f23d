"""CPU time of the everyday commands, next to the cost of importing torch, each in a fresh process.

    python benchmarks/bench_cli_startup.py [--repeats 7] [--live]

``--live`` adds `cnnzoo list` with its counts computed by building every network, as it did before the counts
were stored (src/cnnzoo/models/_counts.json, `cnnzoo.counts`): what the store saves.

Each command runs ``--repeats`` times, the commands interleaved (a change in the machine's load hits all alike);
the figure is the CPU time (user + sys) the child process used, median and min over the repeats, from
``getrusage(RUSAGE_CHILDREN)``. Wall time is printed too, but on a shared machine only CPU time is comparable.
``python -c "import torch"`` is the floor every command pays (cnnzoo's networks are torch modules); the column
"over torch" is what cnnzoo adds to it.

The children run as an installed package does, with compiled bytecode cached: in a temporary
``PYTHONPYCACHEPREFIX`` (the source tree stays clean), filled by one untimed run of each command, whatever
``PYTHONDONTWRITEBYTECODE`` says (without a cache every run compiles cnnzoo's ~100 modules again, ~0.4 s).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _cnnzoo() -> list[str]:
    script = Path(sys.executable).with_name("cnnzoo")
    if script.exists():
        return [str(script)]
    found = shutil.which("cnnzoo")
    return [found] if found else [sys.executable, "-m", "cnnzoo"]


LIVE = ("import pathlib, cnnzoo.counts as c; c.COUNTS_FILE = pathlib.Path('/nonexistent'); "
        "from cnnzoo.cli.main import main; main(['list'])")


def commands(live: bool = False) -> dict[str, list[str]]:
    cz = _cnnzoo()
    return {
        'python -c "pass"': [sys.executable, "-c", "pass"],
        'python -c "import torch"': [sys.executable, "-c", "import torch"],
        "cnnzoo --help": [*cz, "--help"],
        "cnnzoo list": [*cz, "list"],
        "cnnzoo info lenet5": [*cz, "info", "lenet5"],
        **({"cnnzoo list, counted live": [sys.executable, "-c", LIVE]} if live else {}),
    }


def cpu_of(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one run of ``argv``; its output is discarded, a failure is an error."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=True, env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=7, help="runs of each command (default: 7)")
    p.add_argument("--live", action="store_true", help="also `cnnzoo list` counting live (slow: ~10 s of CPU a run)")
    args = p.parse_args()
    cmds = commands(args.live)
    cpu: dict[str, list[float]] = {k: [] for k in cmds}
    wall: dict[str, list[float]] = {k: [] for k in cmds}
    with tempfile.TemporaryDirectory(prefix="cnnzoo-pycache-") as cache:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env.update(PYTHONPYCACHEPREFIX=cache, COLUMNS="120")
        for argv in cmds.values():  # untimed: fills the bytecode cache
            cpu_of(argv, env)
        for _ in range(args.repeats):
            for label, argv in cmds.items():
                c, w = cpu_of(argv, env)
                cpu[label].append(c)
                wall[label].append(w)
    import torch  # only now: the parent's own import must not overlap the measurements

    print(f"python {sys.version.split()[0]}, torch {torch.__version__}, {os.cpu_count()} CPUs, "
          f"{args.repeats} runs each; CPU = user + sys of the child process")
    print(f"{'command':28s} {'CPU median':>11s} {'CPU min':>8s} {'over torch':>11s} {'wall median':>12s}")
    floor = statistics.median(cpu['python -c "import torch"'])
    for label in cmds:
        med = statistics.median(cpu[label])
        over = f"{med - floor:+.2f} s" if label.startswith("cnnzoo") else ""
        print(f"{label:28s} {med:9.2f} s {min(cpu[label]):6.2f} s {over:>11s} {statistics.median(wall[label]):10.2f} s")


if __name__ == "__main__":
    main()
