"""Downloadable built-ins: IDX/CIFAR parsers, loopback-served downloads, checksum rejection, offline errors."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import pickle
import socket
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnzoo.data import DatasetUnavailableError, load_dataset
from cnnzoo.data import download as dl
from cnnzoo.data.builtin import parse_idx

IDX_NAMES = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
             "t10k-labels-idx1-ubyte.gz"]  # fmt: skip


def idx_bytes(array: np.ndarray) -> bytes:
    """An uncompressed IDX file exactly as LeCun's format describes it (uint8 data)."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def make_idx_files(rng: np.random.Generator, n_train: int = 12, n_test: int = 5) -> dict[str, bytes]:
    arrays = [rng.integers(0, 256, (n_train, 28, 28)), rng.integers(0, 10, n_train),
              rng.integers(0, 256, (n_test, 28, 28)), rng.integers(0, 10, n_test)]  # fmt: skip
    return {name: gzip.compress(idx_bytes(a)) for name, a in zip(IDX_NAMES, arrays, strict=True)}


def _pickle(obj) -> bytes:
    return pickle.dumps(obj, protocol=2)


def make_cifar_archive(rng: np.random.Generator, hundred: bool, n: int = 4) -> tuple[bytes, dict]:
    """A cifar-10/100-python.tar.gz with the canonical member names and dict layout, ``n`` images per batch."""
    if hundred:
        folder, label_key, meta_name = "cifar-100-python", "fine_labels", "meta"
        batches = {"train": n * 2, "test": n}
        meta = {"fine_label_names": [f"fine{i}" for i in range(100)], "coarse_label_names": ["c"] * 20}
        n_classes = 100
    else:
        folder, label_key, meta_name = "cifar-10-batches-py", "labels", "batches.meta"
        batches = {**{f"data_batch_{i}": n for i in range(1, 6)}, "test_batch": n}
        meta = {"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                                "truck"], "num_cases_per_batch": n}  # fmt: skip
        n_classes = 10
    contents = {}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        members = {meta_name: meta}
        for name, count in batches.items():
            d = {"batch_label": name, "data": rng.integers(0, 256, (count, 3072), dtype=np.uint8),
                 label_key: [int(v) for v in rng.integers(0, n_classes, count)]}  # fmt: skip
            if hundred:
                d["coarse_labels"] = [0] * count
            members[name] = d
            contents[name] = d
        for name, obj in members.items():
            data = _pickle(obj)
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue(), contents


@pytest.fixture
def server(tmp_path):
    """A loopback HTTP server serving tmp_path/www; yields (root dir, base URL)."""
    www = tmp_path / "www"
    www.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(www)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def dead_url():
    """A loopback URL on which nothing listens (connection refused, as when offline)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def _serve(monkeypatch, www: Path, base: str, name: str, files: dict[str, bytes], served: dict | None = None):
    (www / name).mkdir(parents=True, exist_ok=True)
    for fn, data in (served or files).items():
        (www / name / fn).write_bytes(data)
    monkeypatch.setitem(dl.MIRRORS, name, [f"{base}/{name}/"])
    monkeypatch.setitem(dl.FILES, name, {fn: md5(data) for fn, data in files.items()})


def _no_partials(directory: Path) -> bool:
    return not any(".part" in p.name for p in directory.rglob("*"))


def test_parse_idx_roundtrip_and_rejects_garbage():
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    assert np.array_equal(parse_idx(idx_bytes(a)), a)
    labels = np.array([3, 1, 4], dtype=np.uint8)
    assert np.array_equal(parse_idx(idx_bytes(labels)), labels)
    with pytest.raises(ValueError, match="not an IDX file"):
        parse_idx(b"PK\x03\x04 not idx")
    with pytest.raises(ValueError, match="needs 24 data bytes, found 23"):
        parse_idx(idx_bytes(a)[:-1])


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_idx_download_verify_parse(monkeypatch, server, tmp_path, name):
    www, base = server
    files = make_idx_files(np.random.default_rng(0))
    _serve(monkeypatch, www, base, name, files)
    cache = tmp_path / "cache"
    bundle = load_dataset(name, data_dir=cache)
    assert sorted(p.name for p in (cache / name).iterdir()) == sorted(IDX_NAMES)
    assert _no_partials(cache)
    images = parse_idx(gzip.decompress(files["train-images-idx3-ubyte.gz"]))
    labels = parse_idx(gzip.decompress(files["t10k-labels-idx1-ubyte.gz"]))
    assert torch.equal(bundle.train.images[:, 0], torch.from_numpy(images))
    assert torch.equal(bundle.test.labels, torch.from_numpy(labels.astype(np.int64)))
    assert bundle.in_channels == 1 and bundle.image_size == (28, 28) and len(bundle.classes) == 10
    assert bundle.classes[0] == ("0" if name == "mnist" else "T-shirt/top")
    assert bundle.mean[0] == pytest.approx(images.mean() / 255, rel=1e-6)
    # Cached now: loads with downloading disabled and the server gone.
    monkeypatch.setitem(dl.MIRRORS, name, ["http://127.0.0.1:9/"])
    assert torch.equal(load_dataset(name, data_dir=cache, download=False).train.images, bundle.train.images)


def test_corrupted_download_rejected_and_not_left_behind(monkeypatch, server, tmp_path):
    www, base = server
    files = make_idx_files(np.random.default_rng(1))
    bad = dict(files)
    bad["t10k-images-idx3-ubyte.gz"] = files["t10k-images-idx3-ubyte.gz"][:-10] + b"0123456789"
    _serve(monkeypatch, www, base, "mnist", files, served=bad)
    cache = tmp_path / "cache"
    with pytest.raises(DatasetUnavailableError, match="checksum mismatch") as err:
        load_dataset("mnist", data_dir=cache)
    assert "t10k-images-idx3-ubyte.gz" in str(err.value)
    assert not (cache / "mnist" / "t10k-images-idx3-ubyte.gz").exists()
    assert (cache / "mnist" / "train-images-idx3-ubyte.gz").exists()  # the good files are kept
    assert _no_partials(cache)


def test_offline_error_names_files_and_directory(monkeypatch, tmp_path, dead_url):
    monkeypatch.setitem(dl.MIRRORS, "cifar10", [dead_url])
    monkeypatch.delenv("CNNZOO_DATA_MIRROR", raising=False)
    with pytest.raises(DatasetUnavailableError) as err:
        load_dataset("cifar10", data_dir=tmp_path)
    text = str(err.value)
    assert "download failed" in text and f"Place these files in {tmp_path / 'cifar10'}" in text
    assert "cifar-10-python.tar.gz" in text and "c58f30108f718f92721af3b95e74349a" in text
    monkeypatch.setitem(dl.MIRRORS, "mnist", [dead_url])
    with pytest.raises(DatasetUnavailableError) as err:
        load_dataset("mnist", data_dir=tmp_path, download=False)
    assert "downloading is disabled" in str(err.value)
    assert all(name in str(err.value) for name in IDX_NAMES)


def test_default_cache_dir_from_environment(monkeypatch, tmp_path, dead_url):
    monkeypatch.setenv("CNNZOO_DATA", str(tmp_path / "envcache"))
    monkeypatch.setitem(dl.MIRRORS, "mnist", [dead_url])
    with pytest.raises(DatasetUnavailableError, match=str(tmp_path / "envcache" / "mnist")):
        load_dataset("mnist", download=False)


def test_data_dir_with_user_files_needs_no_network(monkeypatch, tmp_path, dead_url):
    files = make_idx_files(np.random.default_rng(2))
    monkeypatch.setitem(dl.MIRRORS, "mnist", [dead_url])
    monkeypatch.setitem(dl.FILES, "mnist", {fn: md5(d) for fn, d in files.items()})
    user = tmp_path / "mine"
    user.mkdir()
    for fn, data in files.items():  # gz'd files right in data_dir, one of them uncompressed
        if fn.startswith("t10k-labels"):
            (user / fn[:-3]).write_bytes(gzip.decompress(data))
        else:
            (user / fn).write_bytes(data)
    bundle = load_dataset("mnist", data_dir=user, download=False)
    assert (len(bundle.train), len(bundle.test)) == (12, 5)
    # A user file that is not the canonical one is refused with its checksum.
    (user / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8bjunk")
    with pytest.raises(DatasetUnavailableError, match="corrupt or not the canonical file"):
        load_dataset("mnist", data_dir=user, download=False)


@pytest.mark.parametrize("hundred", [False, True])
def test_cifar_download_verify_parse(monkeypatch, server, tmp_path, hundred):
    www, base = server
    name = "cifar100" if hundred else "cifar10"
    archive, contents = make_cifar_archive(np.random.default_rng(3), hundred)
    fn = "cifar-100-python.tar.gz" if hundred else "cifar-10-python.tar.gz"
    _serve(monkeypatch, www, base, name, {fn: archive})
    bundle = load_dataset(name, data_dir=tmp_path / "cache")
    first = "train" if hundred else "data_batch_1"
    test = "test" if hundred else "test_batch"
    key = "fine_labels" if hundred else "labels"
    assert len(bundle.classes) == (100 if hundred else 10)
    assert bundle.classes[0] == ("fine0" if hundred else "airplane")
    assert (len(bundle.train), len(bundle.test)) == ((8, 4) if hundred else (20, 4))
    assert bundle.in_channels == 3 and bundle.image_size == (32, 32)
    # Rows are 1024 red, then green, then blue values of a 32x32 image in row-major order.
    row = contents[first]["data"][0]
    assert int(bundle.train.images[0, 1, 0, 5]) == int(row[1024 + 5])
    assert int(bundle.train.images[0, 2, 3, 0]) == int(row[2048 + 3 * 32])
    assert bundle.train.labels[: len(contents[first][key])].tolist() == contents[first][key]
    assert bundle.test.labels.tolist() == contents[test][key]
    assert _no_partials(tmp_path)


def test_cifar_extracted_folder_and_mirror_env(monkeypatch, server, tmp_path, dead_url):
    www, base = server
    archive, _ = make_cifar_archive(np.random.default_rng(4), hundred=False)
    # $CNNZOO_DATA_MIRROR is tried before the (dead) canonical location.
    (www / "cifar10").mkdir()
    (www / "cifar10" / "cifar-10-python.tar.gz").write_bytes(archive)
    monkeypatch.setenv("CNNZOO_DATA_MIRROR", base)
    monkeypatch.setitem(dl.MIRRORS, "cifar10", [dead_url])
    monkeypatch.setitem(dl.FILES, "cifar10", {"cifar-10-python.tar.gz": md5(archive)})
    via_mirror = load_dataset("cifar10", data_dir=tmp_path / "a")
    # An extracted cifar-10-batches-py/ folder is used without the archive or network.
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(tmp_path / "b", filter="data")
    monkeypatch.delenv("CNNZOO_DATA_MIRROR")
    from_folder = load_dataset("cifar10", data_dir=tmp_path / "b", download=False)
    assert torch.equal(from_folder.train.images, via_mirror.train.images)


def test_cifar_pickle_with_foreign_objects_is_refused(tmp_path):
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": ["a"], "x": functools.partial(print)}))
    with pytest.raises(ValueError, match="not a CIFAR python pickle"):
        load_dataset("cifar10", data_dir=tmp_path, download=False)


def test_interrupted_download_leaves_no_file(monkeypatch, tmp_path):
    """The server promises more bytes than it sends and hangs up: nothing may stay in the cache."""

    class Dropping(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"\x1f\x8b" + b"x" * 1000)
            self.close_connection = True

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Dropping)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        monkeypatch.setitem(dl.MIRRORS, "cifar100", [f"http://127.0.0.1:{httpd.server_address[1]}/"])
        with pytest.raises(DatasetUnavailableError, match="dropped after 1002 of 100000 bytes"):
            load_dataset("cifar100", data_dir=tmp_path)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]
