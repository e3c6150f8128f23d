"""Run `cnnzoo train ...` (under torchrun) and have every rank save its final weights as rank<N>.safetensors.

Used by tests/test_train_distributed.py to check that all ranks end with identical weights.
Usage: python ddp_rank_dump.py OUT_DIR cnnzoo-train-args...
"""

import os
import sys

from safetensors.torch import save_file

from cnnzoo.cli.main import main
from cnnzoo.train import engine

out_dir = sys.argv[1]
_fit = engine.Trainer.fit


def fit_and_dump(self):
    result = _fit(self)
    sd = {k: v.detach().contiguous().clone() for k, v in engine.unwrap(self.model).state_dict().items()}
    save_file(sd, os.path.join(out_dir, f"rank{os.environ.get('RANK', '0')}.safetensors"))
    return result


engine.Trainer.fit = fit_and_dump
sys.exit(main(sys.argv[2:]))
