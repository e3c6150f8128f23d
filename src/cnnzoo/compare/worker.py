"""One run of a comparison in its own process: ``python -m cnnzoo.compare.worker JOB.json`` (used by ``--jobs N``).

The job file holds the resolved config, the run directory and what to measure; the worker trains (or resumes) the
run with the Trainer (a segmentation run, ``"kind": "segmentation"``: with `SegTrainer`) exactly as an in-process run
would, measures it, and writes its record (or its error) to the job's result file. Exit status: 0 done, 1 failed (the error is in the result file), 128 + signal when SIGTERM or
Ctrl-C stopped it after a checkpoint.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    job = json.loads(Path(argv[0]).read_text())
    import torch

    torch.set_num_threads(int(job["threads"]))
    from ..fileio import atomic_write
    from ..train import TrainingInterrupted
    from ..train.config import config_from_dict
    from .runner import RunPlan, execute_run
    from .spec import parse_spec

    if job.get("kind") == "segmentation":
        from ..segmentation.train import SegConfig
        from .segmentation import SegRunPlan

        make, cfg = SegRunPlan, SegConfig.from_dict(job["config"], "comparison job")
    else:
        make, cfg = RunPlan, config_from_dict(job["config"], "comparison job").validate()
    plan = make(spec=parse_spec(job["spec"]), seed=int(job["seed"]), run_dir=Path(job["run_dir"]), cfg=cfg,
                state=job["state"], epochs_done=int(job["epochs_done"]), params=0, macs=0, input_size=(0, 0, 0),
                train_images=0, test_images=0, command=list(job["command"]))
    try:
        record = execute_run(plan, list(job["protocols"]), bool(job["flip"]), int(job["threads"]), verbose=True,
                             device=job.get("device"))
    except TrainingInterrupted as e:
        print(str(e), flush=True)
        return 128 + int(e.signum)
    atomic_write(job["result"], json.dumps(record, indent=1).encode())
    return 0 if record.get("status") == "ok" else 1


if __name__ == "__main__":
    raise SystemExit(main())
