import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
# One intra-op thread per test process: `make test` runs two xdist workers on two cores, and
# oversubscribed OpenMP threads made single tests of deep nets 5x slower.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
