"""Image data sources and deterministic batching for training and evaluation.

Every source yields integer images: ``uint8`` arrays of shape ``(N, H, W, C)`` with levels ``0 .. V-1`` (DESIGN.md
§2); the model maps them to ``f = 2 (x + 0.5) / V - 1`` itself (:func:`mulan_ppl.core.decoder.encode_integers`).

Sources:

- ``"cifar10"``: CIFAR-10 read with ``tfds.data_source`` from a prepared TFDS data directory (no TensorFlow at run
  time). Both splits are decoded once into memory (50,000 + 10,000 images of 3,072 bytes, about 180 MB), so batches
  are plain NumPy fancy indexing. A missing dataset raises :class:`DatasetNotPreparedError` at once; nothing is
  downloaded.
- ``"digits"``: scikit-learn's bundled 8x8 digits, 17 grey levels (V = 17), split 1,437 train / 360 test.
- a path ending in ``.npz`` holding ``uint8`` arrays ``train`` and ``test`` of shape ``(N, H, W, C)``.

Batching is a pure function of ``(seed, step)``: the training stream is the concatenation of one random permutation
of the split per epoch, and batch ``k`` is positions ``k B .. (k + 1) B - 1`` of that stream. A run resumed at step
``k`` therefore sees exactly the batches an uninterrupted run would, and every example appears once per epoch for any
batch size.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
from collections.abc import Iterator

import numpy as np

__all__ = [
    "DataSource",
    "DatasetNotPreparedError",
    "batch_indices",
    "eval_batches",
    "get_batch",
    "load_cifar10",
    "load_dataset",
    "load_digits",
    "load_npz",
    "num_eval_batches",
    "train_batches",
]

DATASET_NAMES = ("cifar10", "digits")
CIFAR10_VOCAB_SIZE = 256
DIGITS_VOCAB_SIZE = 17
DIGITS_NUM_TEST = 360
DIGITS_SPLIT_SEED = 0


class DatasetNotPreparedError(ValueError):
    """A TFDS dataset has not been prepared in the data directory; the message says how to prepare it.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as empty:
        ...     try:
        ...         load_dataset("cifar10", data_dir=empty)
        ...     except DatasetNotPreparedError as err:
        ...         print("is not prepared" in str(err), isinstance(err, ValueError))
        True True
    """


@dataclasses.dataclass(frozen=True, eq=False)
class DataSource:
    """A dataset of integer images with a train and a test split.

    Attributes:
        name: ``"cifar10"``, ``"digits"`` or the ``.npz`` path.
        train: ``uint8`` array ``(N_train, H, W, C)`` with values in ``[0, vocab_size)``.
        test: ``uint8`` array ``(N_test, H, W, C)``, same ``(H, W, C)``.
        vocab_size: number of integer levels ``V`` (2 .. 256).

    Example:
        >>> ds = DataSource("toy", np.zeros((4, 2, 2, 1), np.uint8), np.zeros((2, 2, 2, 1), np.uint8), 2)
        >>> ds.event_shape, ds.num_dims
        ((2, 2, 1), 4)
    """

    name: str
    train: np.ndarray
    test: np.ndarray
    vocab_size: int

    def __post_init__(self):
        if not isinstance(self.vocab_size, (int, np.integer)) or not 2 <= self.vocab_size <= 256:
            raise ValueError(
                f"`DataSource`: `vocab_size` must be an integer in [2, 256] for uint8 images; got {self.vocab_size!r}."
            )
        for split in ("train", "test"):
            _check_images(getattr(self, split), f"`DataSource` ({self.name}): `{split}`", self.vocab_size)
        if self.train.shape[1:] != self.test.shape[1:]:
            raise ValueError(
                f"`DataSource` ({self.name}): `train` and `test` must share (H, W, C); "
                f"got train.shape={self.train.shape}, test.shape={self.test.shape}."
            )

    @property
    def event_shape(self) -> tuple[int, int, int]:
        """``(H, W, C)`` of one image."""
        return tuple(self.train.shape[1:])

    @property
    def num_dims(self) -> int:
        """Number of dimensions of one image, ``H * W * C`` (the denominator of bits per dimension)."""
        return int(np.prod(self.event_shape))


def _check_images(images, what: str, vocab_size: int | None) -> None:
    if not isinstance(images, np.ndarray):
        raise ValueError(f"{what} must be a NumPy uint8 array of shape (N, H, W, C); got {type(images).__name__}.")
    if images.dtype != np.uint8:
        raise ValueError(f"{what} must have dtype uint8 (integer images); got dtype {images.dtype}.")
    if images.ndim != 4 or images.shape[0] == 0 or 0 in images.shape[1:]:
        raise ValueError(f"{what} must have shape (N, H, W, C) with every size >= 1; got shape {images.shape}.")
    if vocab_size is not None:
        top = int(images.max())
        if top >= vocab_size:
            raise ValueError(f"{what} has values up to {top}, outside [0, vocab_size={vocab_size}).")


def _check_vocab(name: str, vocab_size: int | None, intrinsic: int) -> None:
    if vocab_size is not None and vocab_size != intrinsic:
        raise ValueError(f"`load_dataset`: {name} has vocab_size {intrinsic}; got `vocab_size`={vocab_size}.")


# ---------------------------------------------------------------------------------------------------------------------
# Sources


def load_dataset(name_or_path: str | os.PathLike, *, data_dir: str | os.PathLike | None = None,
                 vocab_size: int | None = None) -> DataSource:
    """Loads ``"cifar10"``, ``"digits"`` or an ``.npz`` file of integer images.

    Args:
        name_or_path: ``"cifar10"``, ``"digits"``, or a path ending in ``.npz`` (see :func:`load_npz`).
        data_dir: TFDS data directory for CIFAR-10; default ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``.
        vocab_size: number of levels. For an ``.npz`` file, default 256; for the named datasets it may only repeat
            their own (256 for CIFAR-10, 17 for digits).

    Returns:
        A :class:`DataSource`.

    Raises:
        ValueError: an unknown name (the message lists the valid ones) or a mismatched ``vocab_size``.
        DatasetNotPreparedError: CIFAR-10 is not prepared in the data directory.
        FileNotFoundError: the ``.npz`` file does not exist.

    Example:
        >>> load_dataset("digits").train.shape
        (1437, 8, 8, 1)
    """
    text = os.fspath(name_or_path)
    if text.lower().endswith(".npz"):
        return load_npz(text, vocab_size=vocab_size)
    if text == "cifar10":
        _check_vocab("cifar10", vocab_size, CIFAR10_VOCAB_SIZE)
        return load_cifar10(data_dir=data_dir)
    if text == "digits":
        _check_vocab("digits", vocab_size, DIGITS_VOCAB_SIZE)
        return load_digits()
    raise ValueError(
        f"`load_dataset`: unknown dataset {text!r}; expected one of {', '.join(map(repr, DATASET_NAMES))} "
        "or a path ending in '.npz'."
    )


def load_digits() -> DataSource:
    """scikit-learn's bundled 8x8 handwritten digits: 1,797 images with 17 grey levels (0 .. 16).

    The split is fixed: a permutation from ``numpy.random.RandomState(0)``, whose first 360 images are the test split
    and the remaining 1,437 the training split, in permutation order. This is exactly
    ``sklearn.model_selection.train_test_split(images, test_size=360, random_state=0)`` (equivalently
    ``test_size=0.2``), written out so that it does not depend on scikit-learn's splitting code. Labels are dropped.

    Returns:
        A :class:`DataSource` with ``train`` ``(1437, 8, 8, 1)``, ``test`` ``(360, 8, 8, 1)``, ``vocab_size`` 17.

    Example:
        >>> ds = load_digits()
        >>> ds.test.shape, ds.vocab_size, int(ds.train.max())
        ((360, 8, 8, 1), 17, 16)
    """
    from sklearn import datasets  # noqa: PLC0415  (scikit-learn is only needed for this source)

    images = datasets.load_digits().images  # float64 (1797, 8, 8), integral values 0..16
    images = images.astype(np.uint8)[..., None]
    perm = np.random.RandomState(DIGITS_SPLIT_SEED).permutation(len(images))
    test, train = images[perm[:DIGITS_NUM_TEST]], images[perm[DIGITS_NUM_TEST:]]
    return DataSource("digits", train, test, DIGITS_VOCAB_SIZE)


def load_npz(path: str | os.PathLike, *, vocab_size: int | None = None) -> DataSource:
    """Loads integer images from an ``.npz`` file holding arrays ``train`` and ``test``.

    Args:
        path: file holding ``uint8`` arrays ``train`` ``(N, H, W, C)`` and ``test`` ``(M, H, W, C)``.
        vocab_size: number of levels ``V`` in ``[2, 256]``; default 256. Every value must be below it.

    Returns:
        A :class:`DataSource` named by the path.

    Raises:
        FileNotFoundError: no file at ``path`` (the message names it).
        ValueError: an array is missing, has another dtype or rank, the two disagree in ``(H, W, C)``, or a value
            is ``>= vocab_size``; the message names the array.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = os.path.join(tmp, "toy.npz")
        ...     np.savez(path, train=np.zeros((3, 2, 2, 1), np.uint8), test=np.ones((1, 2, 2, 1), np.uint8))
        ...     print(load_npz(path, vocab_size=2).test.shape)
        (1, 2, 2, 1)
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"`load_npz`: no such file: {str(path)!r}.")
    vocab_size = 256 if vocab_size is None else vocab_size
    with np.load(path, allow_pickle=False) as archive:
        missing = [key for key in ("train", "test") if key not in archive.files]
        if missing:
            raise ValueError(
                f"`load_npz`: {str(path)!r} has no array {missing[0]!r}; it holds {sorted(archive.files)}. "
                "Expected uint8 arrays 'train' and 'test' of shape (N, H, W, C)."
            )
        train, test = archive["train"], archive["test"]
    for key, array in (("train", train), ("test", test)):
        _check_images(array, f"`load_npz`: array {key!r} in {str(path)!r}", None)
    return DataSource(str(path), train, test, vocab_size)


def _resolve_tfds_dir(data_dir) -> str | None:
    # TFDS reads TFDS_DATA_DIR once, at import; reading it here honours a value set after the import.
    if data_dir is not None:
        return os.fspath(data_dir)
    return os.environ.get("TFDS_DATA_DIR") or None


def _not_prepared_message(name: str, data_dir: str | None, cause: BaseException) -> str:
    shown = data_dir or os.path.join(os.path.expanduser("~"), "tensorflow_datasets")
    return (
        f"TFDS dataset {name!r} is not prepared in the data directory {shown!r} ({type(cause).__name__}: {cause}).\n"
        "Prepare it once, on a machine with internet access and TensorFlow installed "
        "(`pip install tensorflow tensorflow-datasets`), in the random-access ArrayRecord format:\n"
        f"    tfds build {name} --data_dir=DIR --file_format=array_record\n"
        "  or\n"
        f"    python -c \"import tensorflow_datasets as tfds; tfds.builder('{name}', data_dir='DIR', "
        "file_format='array_record').download_and_prepare()\"\n"
        "then make DIR available here and point TFDS_DATA_DIR at it (`export TFDS_DATA_DIR=DIR`) or pass it as the "
        "data directory. Reading it needs no TensorFlow. Nothing is downloaded automatically."
    )


def load_cifar10(*, data_dir: str | os.PathLike | None = None, progress: bool = False) -> DataSource:
    """CIFAR-10 (50,000 train / 10,000 test RGB 32x32 images, V = 256) from a prepared TFDS data directory.

    Reads with ``tfds.data_source(..., download=False)``, so no TensorFlow is imported and nothing is downloaded;
    under ``tfds.testing.mock_data`` it returns the mocked random images. Both splits are decoded into memory (about
    180 MB), one record at a time. Labels are dropped.

    Args:
        data_dir: TFDS data directory; default ``$TFDS_DATA_DIR`` (read at call time), else
            ``~/tensorflow_datasets``.
        progress: show a tqdm progress bar while decoding.

    Returns:
        A :class:`DataSource` with ``train`` ``(N, 32, 32, 3)`` and ``test`` ``(M, 32, 32, 3)``, ``uint8``.

    Raises:
        DatasetNotPreparedError: the dataset is not prepared (or not in a random-access format) in the data
            directory; the message says how to prepare it and where to point ``TFDS_DATA_DIR``.
    """
    import tensorflow_datasets as tfds  # noqa: PLC0415  (slow import, needed only for this source)

    data_dir = _resolve_tfds_dir(data_dir)
    splits = {}
    for split in ("train", "test"):
        try:
            source = tfds.data_source("cifar10", split=split, data_dir=data_dir, download=False, try_gcs=False)
        except (KeyError, ValueError, NotImplementedError, OSError, AssertionError) as err:
            # KeyError: no split metadata (never prepared); NotImplementedError/ValueError: prepared without a
            # random-access format; OSError: unreadable files.
            raise DatasetNotPreparedError(_not_prepared_message("cifar10", data_dir, err)) from err
        splits[split] = _materialise(source, f"cifar10 {split}", progress)
    return DataSource("cifar10", splits["train"], splits["test"], CIFAR10_VOCAB_SIZE)


def _materialise(source, desc: str, progress: bool) -> np.ndarray:
    n = len(source)
    if n == 0:
        raise DatasetNotPreparedError(f"TFDS split {desc!r} is empty.")
    first = np.asarray(source[0]["image"])
    out = np.empty((n, *first.shape), np.uint8)
    out[0] = first
    indices = range(1, n)
    if progress:
        from tqdm.auto import tqdm  # noqa: PLC0415

        indices = tqdm(indices, desc=f"decoding {desc}", initial=1, total=n, unit="img")
    for i in indices:  # per record: the mocked sources do not implement batched reads
        out[i] = source[i]["image"]
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Batching


def _check_positive(name: str, value, call: str, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"`{call}`: `{name}` must be an integer >= {minimum}; got {value!r}.")


@functools.lru_cache(maxsize=8)
def _epoch_permutation(num_examples: int, seed: int, epoch: int) -> np.ndarray:
    generator = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, epoch])))
    perm = generator.permutation(num_examples)
    perm.flags.writeable = False
    return perm


def batch_indices(num_examples: int, batch_size: int, *, seed: int, step: int) -> np.ndarray:
    r"""Indices of the training batch at ``step``: a pure function of ``(num_examples, batch_size, seed, step)``.

    Mathematical details:
        Epoch ``e`` visits the examples in the order of a permutation :math:`\pi_e` drawn by NumPy's PCG64 from
        ``SeedSequence([seed, e])``. The stream :math:`\pi_0 \Vert \pi_1 \Vert \dots` is cut into consecutive
        batches; batch ``k`` holds stream positions :math:`p = kB, \dots, kB + B - 1`, i.e. example
        :math:`\pi_{\lfloor p/N \rfloor}(p \bmod N)`. No example is dropped: each appears exactly once per epoch,
        and a batch that straddles two epochs takes the tail of one and the head of the next.

    Args:
        num_examples: size ``N`` of the split, ``>= 1``.
        batch_size: ``B >= 1`` (may exceed ``N``).
        seed: non-negative integer.
        step: non-negative integer.

    Returns:
        ``int64`` array of shape ``(B,)``.

    Example:
        >>> idx = batch_indices(10, 4, seed=0, step=3)
        >>> idx.shape, bool((idx == batch_indices(10, 4, seed=0, step=3)).all())
        ((4,), True)
        >>> epoch = np.concatenate([batch_indices(10, 5, seed=0, step=k) for k in range(2)])
        >>> sorted(epoch.tolist()) == list(range(10))
        True
    """
    _check_positive("num_examples", num_examples, "batch_indices")
    _check_positive("batch_size", batch_size, "batch_indices")
    _check_positive("seed", seed, "batch_indices", minimum=0)
    _check_positive("step", step, "batch_indices", minimum=0)
    positions = int(step) * int(batch_size) + np.arange(batch_size, dtype=np.int64)
    epochs, offsets = np.divmod(positions, num_examples)
    out = np.empty(batch_size, np.int64)
    for epoch in np.unique(epochs):
        where = epochs == epoch
        out[where] = _epoch_permutation(int(num_examples), int(seed), int(epoch))[offsets[where]]
    return out


def get_batch(images: np.ndarray, batch_size: int, *, seed: int, step: int) -> np.ndarray:
    """The training batch at ``step``: ``images[batch_indices(len(images), batch_size, seed=seed, step=step)]``.

    Args:
        images: array ``(N, H, W, C)`` (any array indexable by an integer array).
        batch_size: ``B >= 1``.
        seed: non-negative integer.
        step: non-negative integer.

    Returns:
        Array ``(B, H, W, C)`` of the same dtype.

    Example:
        >>> images = np.arange(6, dtype=np.uint8).reshape(6, 1, 1, 1)
        >>> get_batch(images, 4, seed=1, step=2).shape
        (4, 1, 1, 1)
    """
    return images[batch_indices(len(images), batch_size, seed=seed, step=step)]


def train_batches(images: np.ndarray, batch_size: int, *, seed: int,
                  start_step: int = 0) -> Iterator[tuple[int, np.ndarray]]:
    """Endless ``(step, batch)`` pairs from ``start_step`` on, each batch being :func:`get_batch` at that step.

    Resuming at ``start_step = k`` yields exactly what an uninterrupted iterator yields from its ``k``-th item.

    Example:
        >>> images = np.arange(6, dtype=np.uint8).reshape(6, 1, 1, 1)
        >>> step, batch = next(train_batches(images, 2, seed=0, start_step=5))
        >>> step, bool((batch == get_batch(images, 2, seed=0, step=5)).all())
        (5, True)
    """
    _check_positive("start_step", start_step, "train_batches", minimum=0)
    step = int(start_step)
    while True:
        yield step, get_batch(images, batch_size, seed=seed, step=step)
        step += 1


def num_eval_batches(num_examples: int, batch_size: int) -> int:
    """Number of batches :func:`eval_batches` yields: ``ceil(num_examples / batch_size)``.

    Example:
        >>> num_eval_batches(10, 4)
        3
    """
    _check_positive("num_examples", num_examples, "num_eval_batches")
    _check_positive("batch_size", batch_size, "num_eval_batches")
    return -(-int(num_examples) // int(batch_size))


def eval_batches(images: np.ndarray, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """One pass over a split in order, in fixed-shape batches; the last one is padded and masked.

    Every batch has exactly ``batch_size`` rows, so a jitted (or sharded) evaluation compiles once. Padding rows are
    zeros (a valid integer image) with ``mask`` False; average a per-example metric as
    ``sum(metric * mask) / sum(mask)``.

    Args:
        images: array ``(N, ...)``.
        batch_size: ``B >= 1``.

    Yields:
        ``(batch, mask)``: ``batch`` of shape ``(B, ...)`` and ``images.dtype``; ``mask`` bool ``(B,)``, True for
        real examples. Example ``i`` is row ``i % B`` of batch ``i // B``.

    Example:
        >>> images = np.arange(5, dtype=np.uint8).reshape(5, 1, 1, 1)
        >>> [(b.ravel().tolist(), m.tolist()) for b, m in eval_batches(images, 3)]
        [([0, 1, 2], [True, True, True]), ([3, 4, 0], [True, True, False])]
    """
    num_batches = num_eval_batches(len(images), batch_size)
    n = len(images)
    for k in range(num_batches):
        chunk = np.asarray(images[k * batch_size: min((k + 1) * batch_size, n)])
        mask = np.zeros(batch_size, bool)
        mask[: len(chunk)] = True
        if len(chunk) < batch_size:
            pad = np.zeros((batch_size - len(chunk), *chunk.shape[1:]), chunk.dtype)
            chunk = np.concatenate([chunk, pad])
        yield chunk, mask
