"""Two gloo processes under torchrun train like one process with the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

DUMP = Path(__file__).parent / "helpers" / "ddp_rank_dump.py"


def _train(run_dir: Path, batch_size: int, nproc: int, net: str = "lenet5", *extra: str) -> dict[str, torch.Tensor]:
    dump_dir = run_dir.with_name(run_dir.name + "-ranks")
    dump_dir.mkdir(parents=True)
    args = [str(DUMP), str(dump_dir), "train", net, "--epochs", "1", "--limit-batches", "8", "--batch-size",
            str(batch_size), "--run-dir", str(run_dir), "--quiet", "--seed", "3", "--device", "cpu", *extra]
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


def test_precise_bn_statistics_are_averaged_over_ranks(tmp_path):
    # each rank re-estimates the statistics on its own shard; unless they are averaged, DDP's buffer broadcast at
    # the evaluation leaves rank 0's half everywhere. Averaged, the running means are those of the global batches:
    # each batch of 32 is two ranks' 16 (not so the variances: a batch's is not the mean of its halves').
    ddp = _train(tmp_path / "ddp", 16, 2, "resnet20_cifar", "--set", "train.precise_bn=3")
    means = [k for k in ddp if k.endswith("running_mean")]
    assert len(means) == 19
    # the first BN's input is the stem conv's output: recomputed here from the final weights over the three
    # global batches of 32 (the single process's batches)
    from cnnzoo import create_model
    from cnnzoo.data import load_dataset, make_loader

    model = create_model("resnet20_cifar", num_classes=10, in_channels=1)
    model.load_state_dict(ddp)
    model.eval()
    seen = []
    name, bn = next((n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d))
    bn.register_forward_hook(lambda m, i, o: seen.append(i[0].mean((0, 2, 3))))
    with torch.no_grad():
        for k, (x, _) in enumerate(make_loader(load_dataset("mnist5k"), "train", batch_size=32, train=False)):
            if k == 3:
                break
            model(x)
    torch.testing.assert_close(ddp[f"{name}.running_mean"], torch.stack(seen).mean(0), rtol=1e-3, atol=1e-4)
