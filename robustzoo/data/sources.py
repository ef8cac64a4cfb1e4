"""Loaders for the built-in datasets, each returning uint8 NCHW tensors.

No loader unpickles anything from arbitrary classes: CIFAR's python batches are read with a
restricted unpickler that only rebuilds numpy arrays, dicts, lists and strings.
"""

from __future__ import annotations

import gzip
import io
import pickle
import shutil
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError, NotFoundError, RunError
from .core import check_data_dir

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


def read_idx(path: Path, ndim: int | None = None, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Read an IDX file (optionally .gz): magic 0x0000 08 NDIM, big-endian dims, uint8 data.

    Args:
        path: the file.
        ndim: the number of dimensions it must have (3 for images, 1 for labels).
        shape: the size of one item it must have (e.g. (28, 28) for Fashion-MNIST images).

    Raises:
        DataError: unreadable, not a uint8 IDX file, a header cut short, a byte length that
            disagrees with the header, or dimensions other than ``ndim`` / ``shape``; the
            message names the file.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    fix = "delete it and fetch it again"
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read IDX file {path}: {exc}; {fix}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path} is not a uint8 IDX file (bad magic number: expected 00 00 08 NDIM, found "
                        f"{raw[:4].hex(' ') or 'nothing'}); {fix}")
    nd = raw[3]
    head = 4 + 4 * nd
    if len(raw) < head:
        raise DataError(f"{path} is cut short: its header announces {nd} dimensions ({head} bytes) but the "
                        f"file has {len(raw)} bytes; {fix}")
    dims = struct.unpack(">" + "I" * nd, raw[4:head])
    if ndim is not None and nd != ndim:
        raise DataError(f"{path} has {nd} dimensions {_dims(dims)}, expected {ndim} "
                        f"({'images: count × height × width' if ndim == 3 else 'labels: count'}); is it the "
                        f"right file?")
    expected = int(np.prod(dims, dtype=np.int64))
    found = len(raw) - head
    if found != expected:
        what = "truncated" if found < expected else "longer than its header says"
        raise DataError(f"{path} is {what}: its header says {_dims(dims)} = {expected} bytes of data, the file "
                        f"holds {found}; {fix}")
    if shape is not None and tuple(dims[1:]) != tuple(shape):
        raise DataError(f"{path} holds {_dims(dims[1:])} images; this dataset's images are {_dims(shape)} "
                        f"(the size its architectures are built for); is it the right file?")
    return np.frombuffer(raw, dtype=np.uint8, offset=head).reshape(dims)


def _dims(dims: tuple[int, ...]) -> str:
    return "×".join(map(str, dims)) or "a scalar"


def _find_idx(d: Path, key: str) -> Path | None:
    for suffix in ("", ".gz"):
        p = d / (IDX_NAMES[key] + suffix)
        if p.is_file():
            return p
    return None


def _complete_dir(dirs: list[Path]) -> dict[str, Path] | None:
    """The four IDX files from the first folder that holds all of them (never a mix of folders)."""
    for d in dirs:
        found = {k: _find_idx(d, k) for k in IDX_NAMES}
        if all(found.values()):
            return found  # type: ignore[return-value]
    return None


@contextmanager
def _download_into(data_dir: Path) -> Iterator[None]:
    """Let torchvision download into ``data_dir``; folders it made are removed when the download
    fails (offline), so a failed run leaves no empty ``data/`` behind."""
    made = [p for p in (data_dir, *data_dir.parents) if not p.exists()]  # deepest first
    had = {p for p in data_dir.rglob("*") if p.is_dir()} if data_dir.is_dir() else set()
    try:
        yield
    finally:
        new = [p for p in data_dir.rglob("*") if p.is_dir() and p not in had] if data_dir.is_dir() else []
        for p in sorted(new, key=lambda q: len(q.parts), reverse=True) + made:
            # only folders that hold no file: nothing was downloaded into them
            if p.is_dir() and not any(f.is_file() for f in p.rglob("*")):
                shutil.rmtree(p, ignore_errors=True)


def _idx_dataset(name: str, tv_class: str, dirs: list[Path], data_dir: Path | None, download: bool,
                 hint: str, num_classes: int = 10, image_shape: tuple[int, int] = (28, 28)):
    check_data_dir(data_dir)
    found = _complete_dir(dirs)
    if found is None and download and data_dir is not None:
        import torchvision.datasets as tvd  # deferred: slow to import, needed only to download

        with _download_into(data_dir):
            try:
                getattr(tvd, tv_class)(root=str(data_dir), train=True, download=True)
                getattr(tvd, tv_class)(root=str(data_dir), train=False, download=True)
            except Exception:  # noqa: BLE001 - offline: fall through to the one-line error
                pass
        found = _complete_dir(dirs)
    if found is None:
        # Name what is missing where the files were looked for (the folder holding the most).
        best = max(dirs, key=lambda d: sum(_find_idx(d, k) is not None for k in IDX_NAMES))
        have = [k for k in IDX_NAMES if _find_idx(best, k) is not None]
        if have:
            missing = ", ".join(IDX_NAMES[k] + "[.gz]" for k in IDX_NAMES if k not in have)
            raise NotFoundError(f"{name}: {best} lacks {missing} (it holds {len(have)} of the 4 IDX files, and "
                                f"the four must come from one folder); {hint}")
        where = ", ".join(str(d) for d in dirs)
        raise NotFoundError(f"{name} not found (looked in {where}); {hint}")
    arr = {}
    for k, p in found.items():
        is_images = k.endswith("_x")
        arr[k] = read_idx(p, ndim=3 if is_images else 1, shape=image_shape if is_images else None)
    for split in ("train", "test"):
        x, y = arr[f"{split}_x"], arr[f"{split}_y"]
        if len(x) != len(y):
            raise DataError(f"{found[split + '_x']} holds {len(x)} images but {found[split + '_y']} holds "
                            f"{len(y)} labels; the two files of a split must match (are they from one "
                            f"download?)")
        if len(y) and int(y.max()) >= num_classes:
            row = int(np.argmax(y >= num_classes))
            raise DataError(f"{found[split + '_y']}: label {int(y[row])} at row {row} is outside 0..{num_classes - 1} "
                            f"({name} has {num_classes} classes); is it the right file?")
    return (_t(arr["train_x"][:, None]), _t(arr["train_y"].astype(np.int64)),
            _t(arr["test_x"][:, None]), _t(arr["test_y"].astype(np.int64)))


def load_fashion_mnist(data_dir: Path | None, download: bool):
    """Fashion-MNIST IDX files: from ``--data-dir`` (flat, or torchvision's FashionMNIST/raw;
    downloaded there when online), else from Debian's ``dataset-fashion-mnist`` in
    /usr/share/datasets/fashion-mnist. All four files come from one folder: a ``--data-dir``
    missing some is an error listing them, never topped up from the system folder."""
    if data_dir is not None:
        return _idx_dataset("fashion-mnist", "FashionMNIST", [data_dir, data_dir / "FashionMNIST" / "raw"],
                            data_dir, download, "put all four IDX files (.gz or not) in --data-dir, or drop "
                            f"--data-dir to read {FMNIST_SYSTEM_DIR}")
    return _idx_dataset("fashion-mnist", "FashionMNIST", [FMNIST_SYSTEM_DIR], None, download,
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
    check_data_dir(data_dir)
    root = data_dir if data_dir is not None else Path("data")
    folder = root / info["folder"]
    files = info["train"] + info["test"]
    if not all((folder / f).is_file() for f in files) and download:
        import torchvision.datasets as tvd  # deferred: slow to import, needed only to download

        with _download_into(root):
            try:  # torchvision downloads and checks the archive's md5
                getattr(tvd, info["tv"])(root=str(root), train=True, download=True)
            except Exception:  # noqa: BLE001 - offline: fall through to the one-line error
                pass
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        lacks = f"{folder}/{missing[0]}" if len(missing) == len(files) else \
            f"{folder}: it lacks {', '.join(missing)}"
        raise NotFoundError(
            f"{name} not found (looked for {lacks}); pass --data-dir with "
            f"torchvision's {info['folder']} folder, or run once online")

    def read(names: list[str]):
        xs, ys = [], []
        for f in names:
            path = folder / f
            d = _read_cifar_batch(path)
            try:
                x = np.asarray(d["data"], dtype=np.uint8)
                y = np.asarray(d[info["label"]], dtype=np.int64)
            except (KeyError, TypeError, ValueError) as exc:
                raise DataError(f"{path} is not a CIFAR batch (no usable 'data' and {info['label']!r}: "
                                f"{type(exc).__name__}: {exc}); delete it and download again") from None
            if x.ndim != 2 or x.shape[1] != 3 * 32 * 32:
                raise DataError(f"{path}: 'data' has shape {x.shape}, expected N × 3072 (32×32 RGB images); "
                                f"delete it and download again")
            if len(x) != len(y):
                raise DataError(f"{path} holds {len(x)} images but {len(y)} labels; delete it and download again")
            xs.append(x.reshape(-1, 3, 32, 32))
            ys.append(y)
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
