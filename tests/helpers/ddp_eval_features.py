"""Under torchrun: `cnnzoo.evaluate` of a seeded LeNet-5 on this rank's shard of mnist5k's test split.

Every rank writes OUT_DIR/rank<N>.json with the samples it saw and the (all-reduced) result it got.
Used by tests/test_train_features.py. Usage: torchrun --nproc_per_node=2 ddp_eval_features.py OUT_DIR
"""

import json
import os
import sys

import torch
import torch.distributed as dist

import cnnzoo
from cnnzoo.data import load_dataset, make_loader
from cnnzoo.evaluate import evaluate

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
torch.manual_seed(0)
model = cnnzoo.create_model("lenet5")  # the same seed on every rank: the same weights
bundle = load_dataset("mnist5k", download=False)
loader = make_loader(bundle, "test", batch_size=150, train=False, rank=rank, world_size=world)
result = evaluate(model, loader, bundle.num_classes, bundle.classes)
with open(os.path.join(sys.argv[1], f"rank{rank}.json"), "w") as f:
    json.dump({"num_samples": loader.num_samples, "result": result.to_dict()}, f)
dist.destroy_process_group()
