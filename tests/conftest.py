import functools
import http.server
import sys
import threading
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


@pytest.fixture(autouse=True)
def _plain_inference_path(monkeypatch):
    """The suite's results must not depend on the CPU: on one with native BF16 (AVX-512 BF16, AMX) `eval` and
    `predict` default to bf16, and the tests that compare them with the run's own fp32 evaluation would pass on one
    machine and fail on the next. Tests of the probe itself set or delete CNNZOO_FORCE_BF16 themselves."""
    monkeypatch.setenv("CNNZOO_FORCE_BF16", "0")


@pytest.fixture
def server(tmp_path):
    """A loopback HTTP server over a fresh folder: (folder, base URL). Downloads are tested against it, never
    against the internet."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
