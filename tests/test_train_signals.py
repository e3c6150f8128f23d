"""SIGTERM during an epoch saves a checkpoint and says how to resume; the resumed run completes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys


def test_sigterm_mid_epoch_then_resume(tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "cnnzoo", "train", "lenet5", "--epochs", "6", "--batch-size", "16",
           "--run-dir", str(run), "--device", "cpu"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:  # plain progress lines (not a terminal): wait until epoch 2 is under way
        lines.append(line)
        if line.startswith("epoch 2/6 step"):
            proc.send_signal(signal.SIGTERM)
            break
    out = "".join(lines) + proc.stdout.read()
    # stopped by a signal, not finished: the shell convention 128 + SIGTERM, so scripts and schedulers can tell
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM, out[-1500:]
    assert "--resume" in out and str(run) in out, out[-1500:]
    assert (run / "checkpoints" / "last.safetensors").exists()
    epochs_before = [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs_before and max(epochs_before) < 6  # stopped early

    done = subprocess.run([sys.executable, "-m", "cnnzoo", "train", "--resume", str(run), "--quiet"], env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-1500:] + done.stderr[-1500:]
    epochs = [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, 7)), epochs
    assert "test accuracy" in done.stdout
