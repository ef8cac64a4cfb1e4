from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from robustzoo.data import TensorData, load_splits
from robustzoo.data.core import crop_flip
from robustzoo.data.sources import FMNIST_SYSTEM_DIR, read_idx
from robustzoo.errors import NotFoundError, RunError
from robustzoo.plugins import registry


def spec(name):
    return registry("datasets").get(name)


def test_digits_split_is_deterministic_and_disjoint():
    a = load_splits(spec("digits"), seed=0)
    b = load_splits(spec("digits"), seed=0)
    assert len(a.train) + len(a.val) == 1797 - 360 and len(a.test) == 360
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.y, b.test.y)
    assert a.train.x.dtype == torch.uint8 and a.train.x.shape[1:] == (1, 8, 8)
    # train + validation are exactly the dataset's training images: validation never
    # comes from the test set
    x_tr, _, _, _ = spec("digits").load(None, False)
    rows = lambda t: sorted(bytes(r.numpy()) for r in t)  # noqa: E731
    assert rows(torch.cat([a.train.x, a.val.x])) == rows(x_tr)
    assert len(a.val) == 150


def test_batches_yield_x_y_index_in_unit_range():
    s = load_splits(spec("digits"), subset=200)
    seen = []
    for x, y, idx in s.train.batches(64, shuffle=True, generator=torch.Generator().manual_seed(0)):
        assert x.dtype == torch.float32 and float(x.min()) >= 0 and float(x.max()) <= 1
        assert torch.equal(s.train.y[idx], y)
        seen.append(idx)
    assert sorted(torch.cat(seen).tolist()) == list(range(len(s.train)))


def test_subset_and_val_size():
    s = load_splits(spec("digits"), subset=300, val_size=30)
    assert len(s.train) == 270 and len(s.val) == 30 and len(s.test) == 300


def test_shard_gives_disjoint_equal_slices():
    d = TensorData(torch.zeros(10, 1, 2, 2, dtype=torch.uint8), torch.arange(10))
    a = torch.cat([i for _, _, i in d.batches(3, shard=(0, 2))])
    b = torch.cat([i for _, _, i in d.batches(3, shard=(1, 2))])
    assert len(a) == len(b) == 5 and not set(a.tolist()) & set(b.tolist())


def test_crop_flip_keeps_shape_and_range():
    x = torch.rand(5, 3, 32, 32)
    y = crop_flip(x, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1
    assert not torch.equal(x, y)


def _crop_flip_one_by_one(x: torch.Tensor, g: torch.Generator, pad: int = 4) -> torch.Tensor:
    """The augmentation written per image, with the draws crop_flip always made on the CPU:
    all shifts (rows, then columns), then all flips, from one generator."""
    b, _, h, w = x.shape
    shifts = torch.randint(0, 2 * pad + 1, (2, b), generator=g)
    flips = torch.rand(b, generator=g) < 0.5
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    out = torch.stack([padded[i, :, shifts[0, i]:shifts[0, i] + h, shifts[1, i]:shifts[1, i] + w]
                       for i in range(b)])
    return torch.where(flips[:, None, None, None], out.flip(3), out)


def test_crop_flip_on_the_cpu_draws_what_it_always_drew():
    """CPU runs are unchanged by drawing on the data's device: same generator, same draws."""
    from robustzoo.data.core import augment_generator

    x = torch.rand(7, 3, 10, 10)
    got = crop_flip(x, torch.Generator().manual_seed(4))
    assert torch.equal(got, _crop_flip_one_by_one(x, torch.Generator().manual_seed(4)))
    g = torch.Generator()
    assert augment_generator(g, "cpu") is g and augment_generator(None, "cpu") is None
    # batches(): the shuffle, then the augmentation, from the one CPU generator per epoch
    d = TensorData((torch.rand(12, 3, 10, 10) * 255).to(torch.uint8), torch.arange(12))
    (xb, _, idx), = d.batches(12, shuffle=True, generator=torch.Generator().manual_seed(9), augment="crop_flip")
    g = torch.Generator().manual_seed(9)
    order = torch.randperm(12, generator=g)
    assert torch.equal(idx, order)
    assert torch.equal(xb, _crop_flip_one_by_one(d.x[order].float() / 255, g))


def test_crop_flip_reflect_pads_as_numpy_reflect_and_draws_what_crop_flip_draws():
    """Rice et al.'s and Calibrated AT's CIFAR code pad with np.pad(mode='reflect') before the
    random crop; crop_flip_reflect does that with the same shifts and flips as crop_flip."""
    import numpy as np

    x = torch.rand(6, 3, 10, 10)
    pad = 4
    g = torch.Generator().manual_seed(7)
    shifts = torch.randint(0, 2 * pad + 1, (2, 6), generator=g)
    flips = torch.rand(6, generator=g) < 0.5
    padded = torch.from_numpy(np.pad(x.numpy(), [(0, 0), (0, 0), (pad, pad), (pad, pad)], mode="reflect"))
    want = torch.stack([padded[i, :, shifts[0, i]:shifts[0, i] + 10, shifts[1, i]:shifts[1, i] + 10]
                        for i in range(6)])
    want = torch.where(flips[:, None, None, None], want.flip(3), want)
    got = crop_flip(x, torch.Generator().manual_seed(7), pad_mode="reflect")
    assert torch.equal(got, want)
    zero = crop_flip(x, torch.Generator().manual_seed(7))
    assert torch.equal(zero, _crop_flip_one_by_one(x, torch.Generator().manual_seed(7)))
    inside = (shifts == pad).all(0)  # a crop that shifts nothing sees no padding at all
    assert torch.equal(got[inside], zero[inside]) and not torch.equal(got, zero)
    d = TensorData((x * 255).to(torch.uint8), torch.arange(6))
    (a, _, _), = d.batches(6, shuffle=True, generator=torch.Generator().manual_seed(1), augment="crop_flip_reflect")
    (b, _, _), = d.batches(6, shuffle=True, generator=torch.Generator().manual_seed(1), augment="crop_flip")
    assert a.shape == b.shape and not torch.equal(a, b)
def _batches_as_they_were(d: TensorData, batch_size: int, shuffle: bool, g: torch.Generator, augment: str,
                          drop_last: bool, shard: tuple[int, int]):
    """TensorData.batches() before the index order stopped being copied with a host wait
    (commit 15b860f), on the CPU: the reference its draws must keep matching."""
    n = len(d)
    order = torch.randperm(n, generator=g) if shuffle else torch.arange(n)
    rank, world = shard
    if world > 1:
        per = n // world
        order, n = order[rank::world][:per], per
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        rows = order[start:start + batch_size]
        x = d.x[rows].float().div_(255.0)
        if augment == "crop_flip":
            x = crop_flip(x, g)
        yield x, d.y[rows], d.index[rows]


@pytest.mark.parametrize("shuffle,augment,drop_last,shard", [
    (True, "crop_flip", False, (0, 1)), (True, "crop_flip", True, (1, 2)), (True, "none", False, (2, 3)),
    (False, "none", False, (0, 1)), (False, "crop_flip", True, (1, 2))])
def test_seeded_batches_draw_what_they_always_drew(shuffle, augment, drop_last, shard):
    """A seeded run's data order and augmentation draws are those of the version before the
    order's copy to the device became asynchronous: bit for bit, batch for batch, and the
    epoch generator is left in the same state."""
    g = torch.Generator().manual_seed(0)
    d = TensorData((torch.rand(50, 3, 8, 8, generator=g) * 255).to(torch.uint8), torch.randint(0, 10, (50,)),
                   torch.arange(100, 150))
    gen = torch.Generator().manual_seed(11)
    got = list(d.batches(8, shuffle=shuffle, generator=gen, augment=augment, drop_last=drop_last, shard=shard))
    ref = torch.Generator().manual_seed(11)
    want = list(_batches_as_they_were(d, 8, shuffle, ref, augment, drop_last, shard))
    assert len(got) == len(want) > 0
    for a, b in zip(got, want):
        for u, v in zip(a, b):
            assert torch.equal(u, v)
    # the epoch's generator is left where it was: any later draw from it is the same too
    assert torch.equal(gen.get_state(), ref.get_state())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_crop_flip_on_a_gpu_draws_there_without_host_syncs():
    """No host sync in a whole epoch of batches, its first included (the order is sent from
    pinned memory without a wait), and the same order as on the CPU."""
    d = TensorData((torch.rand(64, 3, 32, 32) * 255).to(torch.uint8), torch.arange(64)).to("cuda")
    batches = d.batches(32, shuffle=True, generator=torch.Generator().manual_seed(0), augment="crop_flip")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        first, (x, _, idx) = next(batches), next(batches)
        plain = list(d.batches(32))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert x.is_cuda and first[0].shape == x.shape and len(plain) == 2
    order = torch.randperm(64, generator=torch.Generator().manual_seed(0))
    assert torch.equal(torch.cat([first[2], idx]).cpu(), order)
    again = next(iter(d.batches(32, shuffle=True, generator=torch.Generator().manual_seed(0),
                                augment="crop_flip")))
    assert torch.equal(again[0], first[0])  # reproducible from the seed


@pytest.mark.skipif(not FMNIST_SYSTEM_DIR.is_dir(), reason="apt-get install dataset-fashion-mnist")
def test_fashion_mnist_from_debian_package():
    s = load_splits(spec("fashion-mnist"), subset=500)
    assert s.train.x.shape[1:] == (1, 28, 28) and len(s.test) == 500
    assert set(s.train.y.unique().tolist()) <= set(range(10))


def write_idx(path: Path, arr: np.ndarray, gz: bool = True) -> None:
    header = bytes([0, 0, 8, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    data = header + arr.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        with gzip.open(path.with_name(path.name + ".gz"), "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def make_mnist(root: Path, n_train=30, n_test=12, gz=False) -> None:
    rng = np.random.RandomState(0)
    raw = root / "MNIST" / "raw"
    write_idx(raw / "train-images-idx3-ubyte", rng.randint(0, 256, (n_train, 28, 28)), gz)
    write_idx(raw / "train-labels-idx1-ubyte", rng.randint(0, 10, (n_train,)), gz)
    write_idx(raw / "t10k-images-idx3-ubyte", rng.randint(0, 256, (n_test, 28, 28)), gz)
    write_idx(raw / "t10k-labels-idx1-ubyte", rng.randint(0, 10, (n_test,)), gz)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_in_torchvision_layout(tmp_path, gz):
    make_mnist(tmp_path, gz=gz)
    s = load_splits(spec("mnist"), data_dir=tmp_path, download=False, val_size=5)
    assert len(s.train) == 25 and len(s.test) == 12 and s.test.x.shape[1:] == (1, 28, 28)


def test_truncated_idx_is_a_one_line_error(tmp_path):
    p = tmp_path / "x-idx3-ubyte"
    write_idx(p, np.zeros((4, 28, 28)), gz=False)
    p.write_bytes(p.read_bytes()[:-10])
    with pytest.raises(RunError, match="truncated"):
        read_idx(p)


def make_cifar(root: Path, name: str, n=20) -> None:
    rng = np.random.RandomState(0)
    if name == "cifar10":
        folder = root / "cifar-10-batches-py"
        files, key = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"], "labels"
    else:
        folder = root / "cifar-100-python"
        files, key = ["train", "test"], "fine_labels"
    folder.mkdir(parents=True)
    for f in files:
        d = {"data": rng.randint(0, 256, (n, 3072)).astype(np.uint8),
             key: rng.randint(0, 10 if name == "cifar10" else 100, n).tolist(),
             "batch_label": f"{f}"}
        with open(folder / f, "wb") as fh:
            pickle.dump(d, fh, protocol=2)


@pytest.mark.parametrize("name,n_train", [("cifar10", 100), ("cifar100", 20)])
def test_cifar_in_torchvision_layout(tmp_path, name, n_train):
    make_cifar(tmp_path, name)
    s = load_splits(spec(name), data_dir=tmp_path, download=False, val_size=5)
    assert len(s.train) + len(s.val) == n_train and s.train.x.shape[1:] == (3, 32, 32)


def test_cifar_reader_refuses_code_in_pickles(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    for f in ("train", "test"):
        (folder / f).write_bytes(pickle.dumps({"data": Evil()}))
    with pytest.raises(RunError, match="refusing"):
        load_splits(spec("cifar100"), data_dir=tmp_path, download=False)


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_missing_dataset_says_where_it_looked(tmp_path, name):
    with pytest.raises(NotFoundError) as e:
        load_splits(spec(name), data_dir=tmp_path, download=False)
    assert str(tmp_path) in str(e.value) and "--data-dir" in str(e.value)
