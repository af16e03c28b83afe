"""Image classification datasets from local files, never downloaded, and an elastic-resolution loader.

Dataset specs (:func:`load_dataset`):

- ``digits``: scikit-learn's bundled handwritten digits (1797 8x8 grey images, 10 classes); a fixed,
  stratified 80/20 train/val split (1437/360 images);
- ``digits-hard``: the same digits made hard enough that a network's capacity shows in its accuracy
  (the demo's data): each digit drawn onto a 32x32 canvas at a random size (60-90% of the side), angle
  (+-15 degrees), place and contrast, over a random background, beside a faint fragment of another digit
  of the same split, with pixel noise and, for 30% of the images, an occluding rectangle. Generated, not
  downloaded, and deterministic (seeded by the image's index): the same split as ``digits``, the training
  digits drawn once (1438 images), the validation digits twice with different draws (718 images, so that
  one point of top-1 is 7 images);
- ``cifar10:PATH``: the python-pickle batches of CIFAR-10 (``data_batch_1`` .. ``data_batch_5`` = train,
  ``test_batch`` = val) in ``PATH`` or ``PATH/cifar-10-batches-py``;
- ``imagefolder:PATH``: one folder per class (``PATH/CLASS/*.png|jpg|...``), split 80/20 per class, or
  ``PATH/train/CLASS/...`` and ``PATH/val/CLASS/...`` when both exist; read with Pillow.

A :class:`ImageDataset` keeps its images at their stored size (uint8, or float in [0, 1]) and resizes them
when asked (``F.interpolate``, bilinear), converts grey to 3 channels and normalises with the dataset's
mean/std. :meth:`ImageDataset.loader` yields shuffled batches, each at a resolution drawn from a list (OFA's
elastic resolution), optionally augmented and sharded across ``torch.distributed`` ranks.
"""

from __future__ import annotations

import difflib
import logging
import math
import pickle
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .errors import DatasetError

__all__ = ["DATASETS", "Augment", "ElasticLoader", "ImageDataset", "load_dataset", "parse_spec"]

log = logging.getLogger(__name__)

#: Dataset kinds and whether they take a path.
DATASETS = {"digits": False, "digits-hard": False, "cifar10": True, "imagefolder": True}
SPLITS = ("train", "val")
VAL_FRACTION = 0.2
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles only what a CIFAR-10 batch holds (dicts, lists, bytes, numbers and numpy arrays): any other
    global a file names (``os.system``, ...) is refused instead of called."""

    ALLOWED = frozenset({
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"), ("builtins", "bytearray"),
    })

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which a CIFAR-10 batch never holds (refused)")
        return super().find_class(module, name)


def parse_spec(spec: str) -> tuple[str, Path | None]:
    """``(kind, path)`` of a dataset spec (``digits``, ``cifar10:PATH``, ``imagefolder:PATH``).

    Raises DatasetError for an unknown kind (with close matches) or a missing/extra path."""
    text = str(spec).strip()
    kind, sep, rest = text.partition(":")
    kind = kind.strip().lower()
    if kind not in DATASETS:
        close = difflib.get_close_matches(kind, list(DATASETS), n=2, cutoff=0.5)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        raise DatasetError(
            f"unknown dataset {spec!r}{hint} (expected digits, digits-hard, cifar10:PATH or imagefolder:PATH)"
        )
    if DATASETS[kind]:
        if not sep or not rest.strip():
            raise DatasetError(f"dataset {spec!r}: expected {kind}:PATH with a local folder")
        return kind, Path(rest.strip()).expanduser()
    if sep:
        raise DatasetError(f"dataset {spec!r}: {kind} takes no path (it is made from scikit-learn's bundled digits)")
    return kind, None


# --------------------------------------------------------------------------------------------------------
# Dataset


class ImageDataset(torch.utils.data.Dataset):
    """Images and labels of one split, resized and normalised on access.

    ``images``: (N, C, H, W) with C in {1, 3}, uint8 (0..255) or float (0..1); ``labels``: (N,) int64;
    ``classes``: class names; ``resolution``: the side length items and :meth:`batch` return by default;
    ``mean``/``std``: per-channel normalisation of the 3-channel [0, 1] images; ``flip``: whether a
    horizontal flip is a valid augmentation (not for digits). ``dataset[i]`` is ``(x (3, R, R), label)``.
    """

    def __init__(
        self,
        *,
        name: str,
        split: str,
        images: torch.Tensor,
        labels: torch.Tensor,
        classes: Sequence[str],
        resolution: int,
        mean: Sequence[float],
        std: Sequence[float],
        flip: bool = True,
    ) -> None:
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise DatasetError(f"{name}: images must be (N, 1|3, H, W), got {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise DatasetError(f"{name}: {images.shape[0]} images but labels of shape {tuple(labels.shape)}")
        if int(resolution) < 1:
            raise DatasetError(f"{name}: resolution must be a positive int, got {resolution}")
        self.name = name
        self.split = split
        self.images = images
        self.labels = labels.to(torch.int64)
        self.classes = [str(c) for c in classes]
        self.resolution = int(resolution)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.flip = bool(flip)

    def __repr__(self) -> str:
        return (
            f"ImageDataset({self.name!r}, split={self.split!r}, n={len(self)}, classes={self.n_classes}, "
            f"resolution={self.resolution})"
        )

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x, y = self.batch(torch.tensor([int(index)]))
        return x[0], int(y[0])

    def subset(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> ImageDataset:
        """The images at ``indices`` as a dataset with the same settings."""
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return ImageDataset(
            name=self.name, split=self.split, images=self.images[idx], labels=self.labels[idx],
            classes=self.classes, resolution=self.resolution, mean=self.mean, std=self.std, flip=self.flip,
        )

    def with_resolution(self, resolution: int) -> ImageDataset:
        """The same images served at ``resolution``."""
        return ImageDataset(
            name=self.name, split=self.split, images=self.images, labels=self.labels, classes=self.classes,
            resolution=resolution, mean=self.mean, std=self.std, flip=self.flip,
        )

    def raw(self, index: torch.Tensor | Sequence[int] | slice) -> torch.Tensor:
        """Images at ``index`` as float32 in [0, 1] with 3 channels, at their stored size."""
        x = self.images[index]
        x = x.to(torch.float32) / 255.0 if x.dtype == torch.uint8 else x.to(torch.float32)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return x

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """(x - mean) / std per channel, for 3-channel [0, 1] images."""
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def batch(
        self,
        index: torch.Tensor | Sequence[int] | slice,
        resolution: int | None = None,
        *,
        augment: bool | Augment = False,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)``: the images at ``index`` resized to ``resolution`` (default: :attr:`resolution`) and
        normalised, and their labels. ``augment``: True draws an :class:`Augment` per image with
        ``generator`` (a random translation of up to 1/8 of the side, a scale in [0.9, 1.1], zero padding,
        and a horizontal flip where :attr:`flip`); an :class:`Augment` applies the given one."""
        r = self.resolution if resolution is None else int(resolution)
        x = self.raw(index)
        if augment is not False:
            params = augment if isinstance(augment, Augment) else Augment.draw(x.shape[0], flip=self.flip, generator=generator)
            x = params.apply(x)
        x = resize(x, r)
        return self.normalize(x), self.labels[index]

    def random_images(self, n: int, resolution: int | None = None, *, seed: int = 0) -> torch.Tensor:
        """``n`` images of uniform random pixels at the stored size, resized and normalised like the data
        (test inputs in the range a model trained on the data sees)."""
        gen = torch.Generator().manual_seed(seed)
        x = torch.rand(n, 3, *self.images.shape[-2:], generator=gen)
        return self.normalize(resize(x, self.resolution if resolution is None else int(resolution)))

    def tensors(self, resolution: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Every image (resized, normalised) and label at once; for small datasets."""
        return self.batch(slice(None), resolution)

    def loader(
        self,
        *,
        batch_size: int,
        resolutions: Sequence[int] | None = None,
        shuffle: bool = True,
        drop_last: bool = False,
        augment: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> ElasticLoader:
        """An :class:`ElasticLoader` over this dataset (see there)."""
        return ElasticLoader(
            self, batch_size=batch_size, resolutions=resolutions, shuffle=shuffle, drop_last=drop_last,
            augment=augment, seed=seed, rank=rank, world_size=world_size,
        )


def resize(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """Bilinear resize of (N, C, H, W) to (N, C, r, r) (antialiased when shrinking); a no-op at size r."""
    if x.shape[-2:] == (resolution, resolution):
        return x
    shrink = x.shape[-1] > resolution or x.shape[-2] > resolution
    return F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=shrink)


@dataclass(frozen=True)
class Augment:
    """Per-image random affine augmentation parameters: ``scale`` (n,), ``shift`` (n, 2) in units of half
    the side, ``flip`` (n,) bool."""

    scale: torch.Tensor
    shift: torch.Tensor
    flip: torch.Tensor

    @classmethod
    def draw(cls, n: int, *, flip: bool, generator: torch.Generator | None = None) -> Augment:
        scale = 0.9 + 0.2 * torch.rand(n, generator=generator)
        shift = (torch.rand(n, 2, generator=generator) - 0.5) * 0.5  # up to 1/8 of the side (the grid spans 2)
        flips = torch.rand(n, generator=generator) < 0.5
        return cls(scale=scale, shift=shift, flip=flips if flip else torch.zeros(n, dtype=torch.bool))

    def select(self, index: torch.Tensor) -> Augment:
        return Augment(scale=self.scale[index], shift=self.shift[index], flip=self.flip[index])

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        theta = torch.zeros(n, 2, 3, dtype=x.dtype)
        theta[:, 0, 0] = torch.where(self.flip, -1.0, 1.0) / self.scale
        theta[:, 1, 1] = 1.0 / self.scale
        theta[:, :, 2] = self.shift
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


# --------------------------------------------------------------------------------------------------------
# Loader


class ElasticLoader:
    """Batches of an :class:`ImageDataset`, each at a resolution drawn from ``resolutions``.

    Each epoch (:meth:`set_epoch`) shuffles all indices with ``(seed, epoch)``, cuts them into global
    batches of ``batch_size`` and, under data parallelism, gives rank ``rank`` every ``world_size``-th image
    of each global batch (so all ranks take the same number of steps and together see exactly the global
    batch). The resolution of step ``i`` is drawn with ``(seed, epoch, i)``: the same on every rank.
    ``resolutions=None`` serves the dataset's own resolution.
    """

    def __init__(
        self,
        dataset: ImageDataset,
        *,
        batch_size: int,
        resolutions: Sequence[int] | None = None,
        shuffle: bool = True,
        drop_last: bool = False,
        augment: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        if batch_size < world_size:
            raise ValueError(f"batch_size {batch_size} is smaller than the world size {world_size}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.resolutions = tuple(int(r) for r in resolutions) if resolutions else (dataset.resolution,)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.augment = augment
        self.seed = int(seed)
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        n = len(self.dataset)
        if self.drop_last:
            return n // self.batch_size
        return math.ceil(n / self.batch_size)

    def resolution_of(self, step: int) -> int:
        """The resolution of step ``step`` of the current epoch."""
        if len(self.resolutions) == 1:
            return self.resolutions[0]
        rng = np.random.default_rng([self.seed, self.epoch, step, 7])
        return int(self.resolutions[int(rng.integers(0, len(self.resolutions)))])

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.dataset)
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(n)
        else:
            order = np.arange(n)
        for step in range(len(self)):
            idx = order[step * self.batch_size : (step + 1) * self.batch_size]
            if len(idx) < self.world_size:  # a last batch too small to share: pad with the first images
                idx = np.concatenate([idx, order[: self.world_size - len(idx)]])
            mine = torch.arange(self.rank, len(idx), self.world_size)
            augment: bool | Augment = False
            if self.augment:  # drawn for the global batch, so every rank count gives the same images
                gen = torch.Generator().manual_seed(int(np.random.default_rng([self.seed, self.epoch, step, 3]).integers(2**62)))
                augment = Augment.draw(len(idx), flip=self.dataset.flip, generator=gen).select(mine)
            index = torch.as_tensor(idx, dtype=torch.int64)[mine]
            yield self.dataset.batch(index, self.resolution_of(step), augment=augment)


# --------------------------------------------------------------------------------------------------------
# Loading


def load_dataset(spec: str, *, resolution: int, split: str = "train", seed: int = 0) -> ImageDataset:
    """The ``split`` (``train`` or ``val``) of the dataset named by ``spec``, served at ``resolution``.

    ``seed`` chooses the train/val split where the dataset has none of its own (digits, an image folder
    without ``train/``/``val/``); the default 0 is the fixed split everything else uses. Nothing is
    downloaded. Raises DatasetError for an unknown spec, a missing path or a wrong layout (naming the path
    and what was expected)."""
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
    kind, path = parse_spec(spec)
    if kind == "digits":
        return _load_digits(split, resolution, seed)
    if kind == "digits-hard":
        return _load_digits_hard(split, resolution, seed)
    assert path is not None
    if kind == "cifar10":
        return _load_cifar10(path, split, resolution)
    return _load_imagefolder(path, split, resolution, seed)


def _split_indices(labels: np.ndarray, split: str, seed: int) -> np.ndarray:
    """Stratified split: VAL_FRACTION of each class (at least one image when a class has two) to val."""
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        n_val = int(round(len(idx) * VAL_FRACTION))
        if len(idx) >= 2:
            n_val = min(max(n_val, 1), len(idx) - 1)
        chosen.append(idx[:n_val] if split == "val" else idx[n_val:])
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


_DIGITS_CACHE: dict[str, Any] = {}


def _load_digits(split: str, resolution: int, seed: int) -> ImageDataset:
    images, labels = _digits_arrays()
    train_idx = _split_indices(labels, "train", seed)
    idx = train_idx if split == "train" else _split_indices(labels, "val", seed)
    mean = float(images[train_idx].mean())
    std = float(images[train_idx].std())
    return ImageDataset(
        name="digits",
        split=split,
        images=torch.from_numpy(images[idx][:, None].copy()),
        labels=torch.from_numpy(labels[idx].copy()),
        classes=[str(i) for i in range(10)],
        resolution=resolution,
        mean=(mean,) * 3,
        std=(std,) * 3,
        flip=False,
    )


#: ``digits-hard``: canvas side and how many times each source digit is drawn per split.
HARD_CANVAS = 32
HARD_DRAWS = {"train": 1, "val": 2}


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """sklearn's digits as (1797, 8, 8) float32 in [0, 1] and their labels (loaded once per process)."""
    if "data" not in _DIGITS_CACHE:
        try:
            from sklearn.datasets import load_digits
        except ImportError as exc:  # pragma: no cover - a dependency
            raise DatasetError(f"digits: scikit-learn is not importable ({exc})") from None
        bunch = load_digits()
        _DIGITS_CACHE["data"] = (bunch.images.astype(np.float32) / 16.0, bunch.target.astype(np.int64))
    return _DIGITS_CACHE["data"]


def _place(images: np.ndarray, rng: np.random.Generator, scale: tuple[float, float], angle: float,
           side: int) -> torch.Tensor:
    """``images`` (n, 8, 8) drawn onto (n, 1, side, side) canvases at a random size (a fraction of the side
    in ``scale``), rotation (up to ``angle`` degrees either way) and place (kept inside the canvas)."""
    n = len(images)
    s = rng.uniform(*scale, n)
    a = np.deg2rad(rng.uniform(-angle, angle, n))
    room = (1.0 - s) / s  # the digit's centre may move this far (input units) and stay on the canvas
    t = rng.uniform(-0.9, 0.9, (n, 2)) * room[:, None]
    theta = np.zeros((n, 2, 3), dtype=np.float32)
    theta[:, 0, 0] = np.cos(a) / s
    theta[:, 0, 1] = -np.sin(a) / s
    theta[:, 1, 0] = np.sin(a) / s
    theta[:, 1, 1] = np.cos(a) / s
    theta[:, :, 2] = t
    src = torch.from_numpy(np.ascontiguousarray(images[:, None], dtype=np.float32))
    grid = F.affine_grid(torch.from_numpy(theta), [n, 1, side, side], align_corners=False)
    return F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _render_hard(images: np.ndarray, seed: tuple[int, ...], side: int = HARD_CANVAS) -> np.ndarray:
    """The ``digits-hard`` drawing of ``images`` (n, 8, 8) in [0, 1]: (n, 1, side, side) uint8, a pure
    function of ``images`` and ``seed``."""
    n = len(images)
    rng = np.random.default_rng(list(seed))
    digit = _place(images, rng, (0.6, 0.9), 15.0, side).numpy()[:, 0]
    other = images[rng.permutation(n)]  # a fragment of another digit of the split, faint and small
    clutter = _place(other, rng, (0.3, 0.5), 45.0, side).numpy()[:, 0]
    background = rng.uniform(0.0, 0.35, (n, 1, 1))
    contrast = rng.uniform(0.45, 1.0, (n, 1, 1))
    x = background + np.maximum(contrast * digit, rng.uniform(0.1, 0.25, (n, 1, 1)) * clutter)
    x += rng.normal(0.0, 1.0, x.shape) * rng.uniform(0.02, 0.08, (n, 1, 1))
    occluded = np.flatnonzero(rng.random(n) < 0.3)
    sizes = rng.integers(side // 8, side // 4 + 1, (n, 2))
    corners = rng.integers(side // 8, side - side // 8 - sizes)
    shades = rng.uniform(0.0, 1.0, n)
    for i in occluded:
        (h, w), (y0, x0) = sizes[i], corners[i]
        x[i, y0 : y0 + h, x0 : x0 + w] = shades[i]
    return np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)[:, None]


def _load_digits_hard(split: str, resolution: int, seed: int) -> ImageDataset:
    key = f"hard-{split}-{seed}"
    if key not in _DIGITS_CACHE:
        images, labels = _digits_arrays()
        idx = _split_indices(labels, split, seed)
        draws = [_render_hard(images[idx], (16, seed, SPLITS.index(split), k)) for k in range(HARD_DRAWS[split])]
        _DIGITS_CACHE[key] = (np.concatenate(draws), np.tile(labels[idx], HARD_DRAWS[split]))
    x, y = _DIGITS_CACHE[key]
    if "hard-stats" not in _DIGITS_CACHE:
        train = _load_digits_hard("train", resolution, 0).images if split != "train" or seed != 0 else torch.from_numpy(x)
        f = train.to(torch.float32) / 255.0
        _DIGITS_CACHE["hard-stats"] = (float(f.mean()), float(f.std()))
    mean, std = _DIGITS_CACHE["hard-stats"]
    return ImageDataset(
        name="digits-hard", split=split, images=torch.from_numpy(x), labels=torch.from_numpy(y),
        classes=[str(i) for i in range(10)], resolution=resolution, mean=(mean,) * 3, std=(std,) * 3, flip=False,
    )


def _load_cifar10(path: Path, split: str, resolution: int) -> ImageDataset:
    expected = "data_batch_1..data_batch_5 and test_batch (CIFAR-10's python version)"
    if not path.is_dir():
        raise DatasetError(f"cifar10:{path}: no such folder; expected a folder holding {expected}")
    root = path
    if not (root / "test_batch").is_file() and (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    missing = [n for n in names if not (root / n).is_file()]
    if missing:
        raise DatasetError(f"cifar10:{path}: missing {', '.join(missing)}; expected a folder holding {expected}")
    xs, ys = [], []
    for n in names:
        file = root / n
        try:
            with open(file, "rb") as fp:
                batch = _CifarUnpickler(fp, encoding="bytes").load()
            data = batch.get(b"data", batch.get("data")) if isinstance(batch, dict) else None
            labels = batch.get(b"labels", batch.get("labels")) if isinstance(batch, dict) else None
            if data is None or labels is None:
                raise ValueError("no 'data'/'labels' entries")
            arr = np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32)
            lab = np.asarray(labels, dtype=np.int64)
            if arr.shape[0] != lab.shape[0]:
                raise ValueError(f"{arr.shape[0]} images but {lab.shape[0]} labels")
        except Exception as exc:  # pickle raises many kinds of errors for a foreign file
            raise DatasetError(f"cifar10:{path}: {file.name} is not a CIFAR-10 python batch ({exc})") from None
        xs.append(arr)
        ys.append(lab)
    classes = [str(i) for i in range(10)]
    meta = root / "batches.meta"
    if meta.is_file():
        try:
            with open(meta, "rb") as fp:
                names_raw = _CifarUnpickler(fp, encoding="bytes").load().get(b"label_names")
            classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names_raw]
        except Exception:  # optional metadata; digits of the labels do as names
            log.debug("cifar10: could not read %s", meta)
    labels_all = np.concatenate(ys)
    if labels_all.min() < 0 or labels_all.max() >= 10:
        raise DatasetError(f"cifar10:{path}: labels outside 0..9")
    return ImageDataset(
        name="cifar10", split=split, images=torch.from_numpy(np.concatenate(xs)),
        labels=torch.from_numpy(labels_all), classes=classes, resolution=resolution,
        mean=CIFAR_MEAN, std=CIFAR_STD, flip=True,
    )


def _class_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _load_imagefolder(path: Path, split: str, resolution: int, seed: int) -> ImageDataset:
    expected = "one sub-folder of images per class (PATH/CLASS/*.png), or PATH/train/CLASS and PATH/val/CLASS"
    if not path.is_dir():
        raise DatasetError(f"imagefolder:{path}: no such folder; expected {expected}")
    try:
        from PIL import Image
    except ImportError:
        raise DatasetError(f"imagefolder:{path}: reading images needs Pillow (pip install pillow)") from None
    has_splits = (path / "train").is_dir() and (path / "val").is_dir()
    class_root = path / "train" if has_splits else path
    classes = [p.name for p in _class_folders(class_root)]
    if not classes:
        raise DatasetError(f"imagefolder:{path}: no class folders; expected {expected}")
    root = path / split if has_splits else path
    files: list[Path] = []
    labels: list[int] = []
    for c, name in enumerate(classes):
        folder = root / name
        found = _image_files(folder) if folder.is_dir() else []
        files.extend(found)
        labels.extend([c] * len(found))
    if not files:
        raise DatasetError(f"imagefolder:{path}: no images ({', '.join(IMAGE_SUFFIXES)}) in the class folders "
                           f"of {root}; expected {expected}")
    lab = np.asarray(labels, dtype=np.int64)
    if not has_splits:
        keep = _split_indices(lab, split, seed)
        files = [files[i] for i in keep]
        lab = lab[keep]
    arrays = []
    for file in files:
        try:
            with Image.open(file) as im:
                im = im.convert("RGB").resize((resolution, resolution), Image.BILINEAR)
                arrays.append(np.asarray(im, dtype=np.uint8).transpose(2, 0, 1))
        except Exception as exc:  # Pillow raises many kinds of errors for unreadable files
            raise DatasetError(f"imagefolder:{path}: cannot read image {file} ({exc})") from None
    images = torch.from_numpy(np.stack(arrays)) if arrays else torch.zeros(0, 3, resolution, resolution, dtype=torch.uint8)
    return ImageDataset(
        name=f"imagefolder:{path.name}", split=split, images=images, labels=torch.from_numpy(lab),
        classes=classes, resolution=resolution, mean=IMAGENET_MEAN, std=IMAGENET_STD, flip=True,
    )
