"""Dataset specs, in-memory tensor data and the (x, y, index) batch iterator.

All datasets robustzoo ships fit in memory, so they are held as uint8 tensors (on the GPU
when there is one) and batched without a DataLoader: no worker processes, no per-sample
Python, and crops/flips run on the device.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import DataError, UsageError
from ..plugins import declare_entry_check, instance_of

Arrays = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class DatasetSpec:
    """How to load a dataset, and the threat-model defaults that suit it.

    Attributes:
        name: registry name.
        num_classes: number of labels.
        shape: (channels, height, width) of one image.
        mean, std: per-channel statistics the model normalises with (inside the model).
        load: ``load(data_dir, download) -> (x_train, y_train, x_test, y_test)``, images as
            uint8 NCHW tensors, labels int64. Raises NotFoundError when the files are missing.
        default_arch: architecture used when ``--arch`` is not given.
        eps: default L-inf budget on the [0,1] pixel scale.
        alpha: default PGD step for training.
        steps: default PGD steps for training.
        eval_alpha: PGD step of the evaluation protocol (0.003 CIFAR, 0.015 MNIST-like).
        val_size: images held out of the training set for checkpoint selection.
        augment: 'crop_flip' (CIFAR: pad-4 crop + horizontal flip, zero padding),
            'crop_flip_reflect' (the same with reflect padding) or 'none'.
        classes: label names.
        test_size: images in the dataset's canonical test set (10,000 for CIFAR and the MNISTs);
            an evaluation on a smaller test split (a truncated file, a local copy) is then not
            "the whole test set" for publishing. None: the loaded split is the whole test set.
    """

    name: str
    num_classes: int
    shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    load: Callable[[Path | None, bool], Arrays]
    default_arch: str
    eps: float
    alpha: float
    steps: int
    eval_alpha: float
    val_size: int = 1000
    augment: str = "none"
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.1
    optimizer: str = "sgd"
    classes: tuple[str, ...] = ()
    description: str = ""
    source: str = ""
    test_size: int | None = None
    extra: dict = field(default_factory=dict)


declare_entry_check("datasets", instance_of(DatasetSpec, "a robustzoo.data.DatasetSpec"))


class TensorData:
    """Images (uint8, NCHW) and labels held as tensors; ``index`` is the row in this set.

    Args:
        x: uint8 images.
        y: int64 labels.
        index: int64 position of each image in the training set (per-example state keys).
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None = None):
        if x.dtype != torch.uint8:
            raise TypeError("TensorData holds uint8 images")
        self.x = x
        self.y = y.long()
        self.index = torch.arange(len(y)) if index is None else index.long()

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device: torch.device | str) -> TensorData:
        """Move to ``device`` (uint8 keeps a CIFAR-10 train set at 150 MB)."""
        return TensorData(self.x.to(device), self.y.to(device), self.index.to(device))

    def take(self, rows: torch.Tensor) -> TensorData:
        """A new TensorData with the given rows (indices kept)."""
        return TensorData(self.x[rows], self.y[rows], self.index[rows])

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        augment: str = "none",
        drop_last: bool = False,
        shard: tuple[int, int] = (0, 1),
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Yield ``(x, y, index)`` with x float32 in [0,1] on the data's device.

        Args:
            batch_size: images per batch.
            shuffle: new random order each call, drawn from ``generator`` (on the CPU so the
                order does not depend on the device).
            augment: 'crop_flip' applies a random 4-pixel-padded crop and flip per image,
                drawn on the data's device (:func:`augment_generator`), with zero padding;
                'crop_flip_reflect' pads by reflection (Rice et al.'s and Calibrated AT's
                code) and draws exactly the same shifts and flips.
            drop_last: skip the last incomplete batch (fixed shapes for compiled models).
            shard: (rank, world_size): every rank sees a disjoint, equal-sized slice: every
                world_size-th example of the shared order, so with ``batch_size`` = global
                batch / world_size the ranks' k-th batches together form the k-th batch of
                a one-process run.
        """
        n = len(self)
        dev = self.x.device
        # The shuffled order is drawn on the CPU (the same order on every device), then sent
        # once per call without a host wait; an unshuffled one is built where the data is.
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n, device=dev)
        rank, world = shard
        if world > 1:
            per = n // world
            order = order[rank::world][:per]
            n = per
        order = to_device_async(order, dev)
        pad_mode = PAD_MODES.get(augment)
        aug = augment_generator(generator, dev) if pad_mode else None
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            rows = order[start:start + batch_size]
            x = self.x[rows].float().div_(255.0)
            if pad_mode:
                x = crop_flip(x, aug, pad_mode=pad_mode)
            yield x, self.y[rows], self.index[rows]


def to_device_async(t: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``t`` on ``device`` without a host wait when it is a CPU tensor going to a GPU.

    A plain ``t.to("cuda")`` from pageable memory blocks until the copy is done (a host sync
    at every epoch's start, and at every evaluation's); from pinned memory with
    ``non_blocking=True`` the copy is queued on the stream like a kernel, and PyTorch's pinned
    allocator keeps the buffer alive until it has run. Elsewhere: ``t.to(device)``.
    """
    device = torch.device(device)
    if device.type != "cuda" or t.device.type != "cpu":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def select_examples(data: TensorData, n: int | None, seed: int = 0) -> TensorData:
    """The first ``n`` examples of a seeded permutation (all, in order, when n is None).

    The chosen rows keep their order in ``data``, so the same ``(n, seed)`` picks the same
    examples on every device and in every command (evaluation, figures).
    """
    if n is None or n >= len(data):
        return data
    if n < 1:
        raise UsageError(f"--n must be at least 1, got {n}")
    g = torch.Generator().manual_seed(seed)
    rows = torch.randperm(len(data), generator=g)[:n].sort().values
    return data.take(rows.to(data.x.device))


def augment_generator(generator: torch.Generator | None, device: torch.device | str) -> torch.Generator | None:
    """The generator that draws augmentations on ``device``.

    ``generator`` itself when it lives there (the CPU: the same draws as ever). For data on a
    GPU, a generator on that GPU seeded from one draw of ``generator``: shifts and flips are
    then drawn where the images are, with no host-to-device copy and no host sync per batch,
    and still follow the run's seed. None stays None (the device's default generator).
    """
    device = torch.device(device)
    if generator is None or generator.device == device:
        return generator
    seed = int(torch.randint(0, 2**62, (), generator=generator))
    return torch.Generator(device=device).manual_seed(seed)


#: augment name -> padding of its crop ('constant' = zeros, as torchvision's RandomCrop;
#: 'reflect' = mirrored about the edge pixel, as numpy's pad(mode='reflect') in Rice et al.'s
#: and Calibrated AT's CIFAR code).
PAD_MODES = {"crop_flip": "constant", "crop_flip_reflect": "reflect"}
AUGMENTS = ("none", *PAD_MODES)


def crop_flip(x: torch.Tensor, generator: torch.Generator | None = None, pad: int = 4,
              pad_mode: str = "constant") -> torch.Tensor:
    """Random ``pad``-pixel translation and horizontal flip, batched on device.

    The shifts and flips are drawn on ``x``'s device, so ``generator`` must live there
    (:func:`augment_generator` makes one); nothing waits for the host. ``pad_mode`` is
    'constant' (zero padding) or 'reflect'; it changes the pixels shifted in, not the draws.
    """
    b, _, h, w = x.shape
    dev = x.device
    shifts = torch.randint(0, 2 * pad + 1, (2, b), generator=generator, device=dev)
    flips = torch.rand(b, generator=generator, device=dev) < 0.5
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad), mode=pad_mode)
    rows = (torch.arange(h, device=dev)[None, :] + shifts[0][:, None])  # b,h
    cols = (torch.arange(w, device=dev)[None, :] + shifts[1][:, None])  # b,w
    cols = torch.where(flips[:, None], cols.flip(1), cols)
    bidx = torch.arange(b, device=dev)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[bidx, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


def check_data_dir(data_dir: Path | None) -> None:
    """``--data-dir`` must be a folder when it exists (a file is refused, not ignored)."""
    if data_dir is not None and data_dir.exists() and not data_dir.is_dir():
        raise UsageError(f"--data-dir {data_dir} is a file, not a folder; give the folder that holds the "
                         f"dataset's files")


def check_arrays(spec: DatasetSpec, x: torch.Tensor, y: torch.Tensor, split: str,
                 data_dir: str | Path | None = None) -> None:
    """What a dataset loader returned must fit its spec: uint8 N×C×H×W images of ``spec.shape``,
    as many int64 labels, each in 0..num_classes-1 (a plugin's loader or a hand-made file
    otherwise fails mid-training, inside the network or the loss).

    Raises:
        DataError: the first disagreement, naming the dataset, the split and ``--data-dir``.
    """
    where = f"{spec.name} {split} set" + (f" (--data-dir {data_dir})" if data_dir else "")
    if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8 or x.dim() != 4:
        raise DataError(f"{where}: the loader returned {getattr(x, 'dtype', type(x).__name__)} images of shape "
                        f"{tuple(getattr(x, 'shape', ()))}, expected uint8 N×C×H×W")
    if tuple(x.shape[1:]) != tuple(spec.shape):
        c, h, w = spec.shape
        raise DataError(f"{where}: images are {'×'.join(map(str, x.shape[1:]))} (C×H×W), {spec.name}'s are "
                        f"{c}×{h}×{w} (the size its architectures are built for); check the files")
    if not isinstance(y, torch.Tensor) or y.dim() != 1 or len(y) != len(x):
        raise DataError(f"{where}: {len(x)} images but {len(y) if hasattr(y, '__len__') else '?'} labels; the "
                        f"image and label files must match")
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= spec.num_classes):
        bad = int(y.max()) if int(y.max()) >= spec.num_classes else int(y.min())
        raise DataError(f"{where}: label {bad} is outside 0..{spec.num_classes - 1} ({spec.name} has "
                        f"{spec.num_classes} classes); check the label files")


@dataclass
class Splits:
    """Train / validation / test sets of one dataset, with its spec."""

    spec: DatasetSpec
    train: TensorData
    val: TensorData
    test: TensorData


def load_test(spec: DatasetSpec, *, data_dir: str | Path | None = None, download: bool = True) -> TensorData:
    """The test split of a dataset alone (what an evaluation needs).

    Unlike :func:`load_splits`, no validation split is drawn, so a run trained with a small
    ``val_size`` (or ``--subset``) is evaluated on the same test set as any other run.
    """
    check_data_dir(Path(data_dir) if data_dir else None)  # as load_splits: also datasets that need no files
    _, _, x_te, y_te = spec.load(Path(data_dir) if data_dir else None, download)
    check_arrays(spec, x_te, y_te, "test", data_dir)
    return TensorData(x_te, y_te)


def load_splits(
    spec: DatasetSpec,
    *,
    data_dir: str | Path | None = None,
    download: bool = True,
    subset: int | None = None,
    val_size: int | None = None,
    seed: int = 0,
) -> Splits:
    """Load a dataset and hold out a validation split from its training set.

    The validation images are drawn from the training set with a fixed seed (never from the
    test set). ``subset`` keeps the first N shuffled training images (and at most N test
    images) for quick runs. ``index`` of the training set is the row in the kept train split.
    """
    check_data_dir(Path(data_dir) if data_dir else None)  # every dataset, also those that need no files
    x_tr, y_tr, x_te, y_te = spec.load(Path(data_dir) if data_dir else None, download)
    check_arrays(spec, x_tr, y_tr, "training", data_dir)
    check_arrays(spec, x_te, y_te, "test", data_dir)
    val_size = spec.val_size if val_size is None else val_size
    if subset is not None and subset < 1:
        raise UsageError(f"--subset must be a positive number of images, got {subset}")
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(y_tr), generator=g)
    if subset is not None:
        perm = perm[:subset]
        val_size = min(val_size, max(len(perm) // 10, 1))
    if val_size >= len(perm):
        raise UsageError(f"validation split of {val_size} leaves no training images; "
                         f"use --set val_size=N with N < {len(perm)}")
    val_rows, train_rows = perm[:val_size], perm[val_size:]
    train = TensorData(x_tr[train_rows], y_tr[train_rows])  # index = row in this split
    val = TensorData(x_tr[val_rows], y_tr[val_rows])
    if subset is not None and subset < len(y_te):
        tg = torch.Generator().manual_seed(seed + 1)
        rows = torch.randperm(len(y_te), generator=tg)[:subset]
        test = TensorData(x_te[rows], y_te[rows], rows)
    else:
        test = TensorData(x_te, y_te)
    return Splits(spec=spec, train=train, val=val, test=test)
