"""Two gloo processes under torchrun train like one process with the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

DUMP = Path(__file__).parent / "helpers" / "ddp_rank_dump.py"


def _train(run_dir: Path, batch_size: int, nproc: int) -> dict[str, torch.Tensor]:
    dump_dir = run_dir.with_name(run_dir.name + "-ranks")
    dump_dir.mkdir(parents=True)
    args = [str(DUMP), str(dump_dir), "train", "lenet5", "--epochs", "1", "--limit-batches", "8", "--batch-size",
            str(batch_size), "--run-dir", str(run_dir), "--quiet", "--seed", "3", "--device", "cpu"]
    if nproc > 1:
        args = ["-m", "torch.distributed.run", f"--nproc_per_node={nproc}", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    ranks = [load_file(dump_dir / f"rank{r}.safetensors") for r in range(nproc)]
    for other in ranks[1:]:  # every rank ends with exactly the same weights
        assert all(torch.equal(ranks[0][k], other[k]) for k in ranks[0])
    saved = load_file(run_dir / "checkpoints" / "last.safetensors")
    assert all(torch.equal(saved[k], ranks[0][k]) for k in saved)
    return saved


def test_two_process_gloo_run_matches_single_process_global_batch(tmp_path):
    ddp = _train(tmp_path / "ddp", batch_size=16, nproc=2)  # 2 ranks x 16 = the global batch of 32
    single = _train(tmp_path / "single", batch_size=32, nproc=1)
    assert ddp.keys() == single.keys()
    for key in single:
        assert not torch.equal(single[key], torch.zeros_like(single[key])) or "bias" in key
        torch.testing.assert_close(ddp[key], single[key], rtol=1e-5, atol=1e-6, msg=key)
