"""Finding, downloading and checksum-verifying the files of the downloadable built-in datasets.

Files go to ``<root>/<dataset>/`` where root is ``data_dir``, else ``$CNNZOO_DATA``, else ``~/.cache/cnnzoo``.
A download is streamed into a temporary name in the same directory, its MD5 checked against `FILES`, and only
then renamed into place, so an interrupted or corrupted download never leaves a file that looks complete.

`MIRRORS` and `FILES` are module-level tables on purpose: tests point `MIRRORS` at a loopback server and
`FILES` at their own checksums. ``$CNNZOO_DATA_MIRROR`` (a base URL) is tried first for every dataset, as
``$CNNZOO_DATA_MIRROR/<dataset>/<file>``.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path

from .bundle import DatasetUnavailableError

log = logging.getLogger("cnnzoo.data")

MIRROR_ENV = "CNNZOO_DATA_MIRROR"
CACHE_ENV = "CNNZOO_DATA"
TIMEOUT_S = 30.0

# Base URLs, tried in order. MNIST: the PyTorch team's S3 copy first because yann.lecun.com often refuses
# downloads (the same order torchvision uses).
MIRRORS: dict[str, list[str]] = {
    "mnist": ["https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"],
    "fashion-mnist": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
    "cifar10": ["https://www.cs.toronto.edu/~kriz/"],
    "cifar100": ["https://www.cs.toronto.edu/~kriz/"],
}

# File name -> MD5 of the canonical file, as published with the datasets (and used by torchvision).
FILES: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
    "cifar10": {"cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a"},
    "cifar100": {"cifar-100-python.tar.gz": "eb9058c3a382ffc7106e4002c42a8d85"},
}


def cache_root(data_dir: str | Path | None = None) -> Path:
    """The root directory datasets are looked up in and downloaded to."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "cnnzoo"


def md5_of(path: Path) -> str:
    """Hex MD5 of a file, read in 1 MiB chunks."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def urls_for(name: str, filename: str) -> list[str]:
    """Every URL to try for one file, the $CNNZOO_DATA_MIRROR one first."""
    bases = list(MIRRORS[name])
    env = os.environ.get(MIRROR_ENV)
    urls = [f"{env.rstrip('/')}/{name}/{filename}"] if env else []
    return urls + [base.rstrip("/") + "/" + filename for base in bases]


def _download(urls: list[str], dest: Path, md5: str) -> None:
    """Fetch the first URL that yields a file with the right MD5 into ``dest``; raise OSError listing failures."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f"{dest.name}.part-{os.getpid()}")
    failures = []
    for url in urls:
        log.info("downloading %s", url)
        try:
            h = hashlib.md5()
            received = 0
            with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response, open(tmp, "wb") as out:
                expected = response.headers.get("Content-Length")
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    h.update(chunk)
                    out.write(chunk)
                    received += len(chunk)
            if expected is not None and expected.isdigit() and received != int(expected):
                failures.append(f"{url}: connection dropped after {received} of {expected} bytes; file rejected")
                continue
            if h.hexdigest() != md5:
                failures.append(f"{url}: checksum mismatch (md5 {h.hexdigest()}, expected {md5}); file rejected")
                continue
            os.replace(tmp, dest)
            return
        # URLError/OSError: offline, refused, HTTP errors; HTTPException: connection dropped mid-file;
        # ValueError: malformed URL.
        except (urllib.error.URLError, OSError, TimeoutError, http.client.HTTPException, ValueError) as e:
            failures.append(f"{url}: {getattr(e, 'reason', e)}")
        finally:
            tmp.unlink(missing_ok=True)
    raise OSError("; ".join(failures))


def fetch(name: str, data_dir: str | Path | None, download: bool, alternatives: dict[str, list[str]] | None = None):
    """Paths of all files of dataset ``name``, downloading missing ones.

    A file is looked up in ``<root>/<name>/`` and then in ``<root>``. Files with a known MD5 are verified.

    Args:
        name: a key of `FILES`.
        data_dir: the root (see `cache_root`).
        download: allowed to download missing files.
        alternatives: canonical file name -> other accepted names (e.g. the uncompressed IDX file), used as
            found and not checksummed.

    Raises:
        DatasetUnavailableError: a file is missing and cannot be downloaded, or a local file fails its checksum.
    """
    root = cache_root(data_dir)
    target = root / name
    found: dict[str, Path] = {}
    missing: list[str] = []
    for filename, md5 in FILES[name].items():
        path = next((d / filename for d in (target, root) if (d / filename).is_file()), None)
        if path is not None:
            actual = md5_of(path)
            if actual != md5:
                raise DatasetUnavailableError(
                    f"{path} is corrupt or not the canonical file (md5 {actual}, expected {md5}); "
                    f"delete it{' to download it again' if download else ' and place the canonical file there'}"
                )
            found[filename] = path
            continue
        alt = next(
            (d / a for a in (alternatives or {}).get(filename, []) for d in (target, root) if (d / a).is_file()), None
        )
        if alt is not None:
            found[filename] = alt
        else:
            missing.append(filename)
    failures = []
    if missing and download:
        for filename in list(missing):
            try:
                _download(urls_for(name, filename), target / filename, FILES[name][filename])
            except OSError as e:
                failures.append(f"  {filename}: {e}")
                continue
            found[filename] = target / filename
            missing.remove(filename)
    if missing:
        listing = "\n".join(f"  {f}  (from {urls_for(name, f)[0]}, md5 {FILES[name][f]})" for f in missing)
        why = "download failed:\n" + "\n".join(failures) if failures else "downloading is disabled"
        raise DatasetUnavailableError(
            f"dataset {name!r} is not available ({why}).\n"
            f"Place these files in {target} (or pass --data-dir DIR and put them in DIR/{name}/):\n{listing}"
        )
    return found
