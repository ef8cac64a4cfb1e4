"""Loaders for the built-in datasets, each returning uint8 NCHW tensors.

No loader unpickles anything from arbitrary classes: CIFAR's python batches are read with a
restricted unpickler that only rebuilds numpy arrays, dicts, lists and strings.
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct
from pathlib import Path

import numpy as np
import torch

from ..errors import NotFoundError, RunError

FMNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
IDX_NAMES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


def _t(x: np.ndarray) -> torch.Tensor:
    # IDX files are read with np.frombuffer (read-only memory): copy those, so torch never
    # warns about (or writes through) a non-writable array.
    x = np.ascontiguousarray(x)
    return torch.from_numpy(x if x.flags.writeable else x.copy())


def load_digits(data_dir: Path | None, download: bool):
    """scikit-learn's bundled 8x8 digits (1,797 images, values 0..16), split 1,437 / 360.

    The split is a fixed permutation (seed 0), identical on every machine.
    """
    # deferred: scikit-learn is slow to import, and only this dataset needs it
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    # 0..16 -> 0..255 so every dataset is uint8 on the same scale.
    x = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    y = d.target.astype(np.int64)
    perm = np.random.RandomState(0).permutation(len(y))
    te, tr = perm[:360], perm[360:]
    return _t(x[tr]), _t(y[tr]), _t(x[te]), _t(y[te])


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally .gz): magic 0x0000 08 NDIM, big-endian dims, uint8 data."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise RunError(f"cannot read IDX file {path}: {exc}; delete it and fetch it again") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise RunError(f"{path} is not a uint8 IDX file (bad magic number)")
    ndim = raw[3]
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise RunError(f"{path} is truncated: expected {int(np.prod(dims))} values, found {data.size}")
    return data.reshape(dims)


def _find_idx(dirs: list[Path], key: str) -> Path | None:
    for d in dirs:
        for suffix in ("", ".gz"):
            p = d / (IDX_NAMES[key] + suffix)
            if p.is_file():
                return p
    return None


def _idx_dataset(name: str, tv_class: str, dirs: list[Path], data_dir: Path | None, download: bool,
                 hint: str):
    found = {k: _find_idx(dirs, k) for k in IDX_NAMES}
    if not all(found.values()) and download and data_dir is not None:
        import torchvision.datasets as tvd  # deferred: slow to import, needed only to download

        try:
            getattr(tvd, tv_class)(root=str(data_dir), train=True, download=True)
            getattr(tvd, tv_class)(root=str(data_dir), train=False, download=True)
        except Exception:  # noqa: BLE001 - offline: fall through to the one-line error
            pass
        found = {k: _find_idx(dirs, k) for k in IDX_NAMES}
    if not all(found.values()):
        where = ", ".join(str(d) for d in dirs)
        raise NotFoundError(f"{name} not found (looked in {where}); {hint}")
    arr = {k: read_idx(p) for k, p in found.items()}
    return (_t(arr["train_x"][:, None]), _t(arr["train_y"].astype(np.int64)),
            _t(arr["test_x"][:, None]), _t(arr["test_y"].astype(np.int64)))


def load_fashion_mnist(data_dir: Path | None, download: bool):
    """Fashion-MNIST IDX files: ``--data-dir`` (flat or torchvision's FashionMNIST/raw), then
    Debian's ``dataset-fashion-mnist`` in /usr/share/datasets/fashion-mnist, then a download."""
    dirs = []
    if data_dir is not None:
        dirs += [data_dir, data_dir / "FashionMNIST" / "raw"]
    dirs.append(FMNIST_SYSTEM_DIR)
    return _idx_dataset("fashion-mnist", "FashionMNIST", dirs, data_dir, download,
                        "install it with `apt-get install dataset-fashion-mnist` or pass "
                        "--data-dir with the four IDX .gz files")


def load_mnist(data_dir: Path | None, download: bool):
    """MNIST in torchvision's layout ``DATA_DIR/MNIST/raw`` (or flat IDX files in DATA_DIR)."""
    if data_dir is None:
        data_dir = Path("data")
    dirs = [data_dir / "MNIST" / "raw", data_dir]
    return _idx_dataset("mnist", "MNIST", dirs, data_dir, download,
                        "pass --data-dir with torchvision's MNIST/raw folder, or run once online")


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that can only rebuild numpy arrays and plain containers."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
        ("builtins", "bytearray"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")


def _read_cifar_batch(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return _ArrayUnpickler(io.BytesIO(f.read()), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise RunError(f"cannot read CIFAR batch {path}: {exc}; delete it and download again") from None


CIFAR = {
    "cifar10": dict(folder="cifar-10-batches-py", train=[f"data_batch_{i}" for i in range(1, 6)],
                    test=["test_batch"], label="labels", tv="CIFAR10"),
    "cifar100": dict(folder="cifar-100-python", train=["train"], test=["test"],
                     label="fine_labels", tv="CIFAR100"),
}


def _load_cifar(name: str, data_dir: Path | None, download: bool):
    info = CIFAR[name]
    root = data_dir if data_dir is not None else Path("data")
    folder = root / info["folder"]
    files = info["train"] + info["test"]
    if not all((folder / f).is_file() for f in files) and download:
        import torchvision.datasets as tvd  # deferred: slow to import, needed only to download

        try:  # torchvision downloads and checks the archive's md5
            getattr(tvd, info["tv"])(root=str(root), train=True, download=True)
        except Exception:  # noqa: BLE001 - offline: fall through to the one-line error
            pass
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise NotFoundError(
            f"{name} not found (looked for {folder}/{missing[0]}); pass --data-dir with "
            f"torchvision's {info['folder']} folder, or run once online")

    def read(names: list[str]):
        xs, ys = [], []
        for f in names:
            d = _read_cifar_batch(folder / f)
            xs.append(np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(d[info["label"]], dtype=np.int64))
        return _t(np.concatenate(xs)), _t(np.concatenate(ys))

    x_tr, y_tr = read(info["train"])
    x_te, y_te = read(info["test"])
    return x_tr, y_tr, x_te, y_te


def load_cifar10(data_dir: Path | None, download: bool):
    """CIFAR-10 in torchvision's layout ``DATA_DIR/cifar-10-batches-py``."""
    return _load_cifar("cifar10", data_dir, download)


def load_cifar100(data_dir: Path | None, download: bool):
    """CIFAR-100 in torchvision's layout ``DATA_DIR/cifar-100-python``."""
    return _load_cifar("cifar100", data_dir, download)
