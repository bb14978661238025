"""Data sources and deterministic batching (``mulan_ppl.train.data``)."""

import socket
import sys
import time

import numpy as np
import pytest

from mulan_ppl.train import data

# ---------------------------------------------------------------------------------------------------------------------
# Training batches


@pytest.mark.parametrize("num_examples,batch_size", [(10, 3), (12, 4), (7, 7), (5, 8), (1, 1)])
def test_each_epoch_visits_every_example_once(num_examples, batch_size):
    num_epochs = 3
    num_steps = -(-num_epochs * num_examples // batch_size)
    stream = np.concatenate([data.batch_indices(num_examples, batch_size, seed=11, step=k) for k in range(num_steps)])
    for epoch in range(num_epochs):
        chunk = stream[epoch * num_examples:(epoch + 1) * num_examples]
        np.testing.assert_array_equal(np.sort(chunk), np.arange(num_examples))


def test_batches_are_a_pure_function_of_seed_and_step():
    a = data.batch_indices(100, 16, seed=3, step=17)
    data.batch_indices(100, 16, seed=3, step=0)  # other calls in between change nothing
    data.batch_indices(100, 16, seed=4, step=17)
    np.testing.assert_array_equal(a, data.batch_indices(100, 16, seed=3, step=17))
    assert a.dtype == np.int64 and a.shape == (16,)


def test_seed_and_epoch_change_the_order():
    first = data.batch_indices(1000, 1000, seed=0, step=0)
    assert not np.array_equal(first, data.batch_indices(1000, 1000, seed=1, step=0))
    assert not np.array_equal(first, data.batch_indices(1000, 1000, seed=0, step=1))  # the next epoch
    assert not np.array_equal(first, np.arange(1000))


def test_resumed_iterator_matches_uninterrupted_run():
    images = np.arange(23, dtype=np.uint8).reshape(23, 1, 1, 1)
    full = data.train_batches(images, 5, seed=7)
    uninterrupted = [next(full) for _ in range(12)]
    resumed = data.train_batches(images, 5, seed=7, start_step=8)
    for step, batch in uninterrupted[8:]:
        resumed_step, resumed_batch = next(resumed)
        assert resumed_step == step
        np.testing.assert_array_equal(resumed_batch, batch)


def test_get_batch_indexes_the_images():
    images = np.random.default_rng(0).integers(0, 256, (9, 2, 2, 3), dtype=np.uint8)
    idx = data.batch_indices(9, 4, seed=2, step=5)
    np.testing.assert_array_equal(data.get_batch(images, 4, seed=2, step=5), images[idx])


@pytest.mark.parametrize("kwargs,name", [
    (dict(num_examples=0, batch_size=2, seed=0, step=0), "num_examples"),
    (dict(num_examples=5, batch_size=0, seed=0, step=0), "batch_size"),
    (dict(num_examples=5, batch_size=2, seed=-1, step=0), "seed"),
    (dict(num_examples=5, batch_size=2, seed=0, step=-1), "step"),
    (dict(num_examples=5, batch_size=2, seed=0, step=1.5), "step"),
])
def test_batch_indices_rejects_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        data.batch_indices(**kwargs)


# ---------------------------------------------------------------------------------------------------------------------
# Evaluation pass


@pytest.mark.parametrize("num_examples,batch_size", [(10, 3), (12, 4), (2, 5), (1, 1)])
def test_eval_pass_covers_every_example_once_in_order(num_examples, batch_size):
    images = np.arange(1, num_examples + 1, dtype=np.uint8).reshape(num_examples, 1, 1, 1)  # 0 marks padding
    batches = list(data.eval_batches(images, batch_size))
    assert len(batches) == data.num_eval_batches(num_examples, batch_size) == -(-num_examples // batch_size)
    for batch, mask in batches:
        assert batch.shape == (batch_size, 1, 1, 1) and batch.dtype == np.uint8
        assert mask.shape == (batch_size,) and mask.dtype == bool
        assert np.all(batch[~mask] == 0)
    values = np.concatenate([batch.ravel()[mask] for batch, mask in batches])
    np.testing.assert_array_equal(values, np.arange(1, num_examples + 1))
    masks = np.concatenate([mask for _, mask in batches])
    assert masks.sum() == num_examples and np.all(masks[:num_examples])


# ---------------------------------------------------------------------------------------------------------------------
# .npz files


def _save(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_npz_round_trip_and_default_vocab(tmp_path):
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (5, 4, 3, 2), dtype=np.uint8)
    test = rng.integers(0, 256, (2, 4, 3, 2), dtype=np.uint8)
    path = _save(tmp_path / "x.npz", train=train, test=test)
    ds = data.load_dataset(path)
    np.testing.assert_array_equal(ds.train, train)
    np.testing.assert_array_equal(ds.test, test)
    assert ds.vocab_size == 256 and ds.event_shape == (4, 3, 2) and ds.num_dims == 24
    assert data.load_dataset(str(path), vocab_size=256).name == str(path)


def test_npz_missing_file_names_the_path(tmp_path):
    missing = tmp_path / "nowhere" / "images.npz"
    with pytest.raises(FileNotFoundError, match="nowhere/images.npz"):
        data.load_dataset(missing)


def test_npz_missing_array_is_named(tmp_path):
    path = _save(tmp_path / "x.npz", train=np.zeros((2, 2, 2, 1), np.uint8))
    with pytest.raises(ValueError, match="'test'"):
        data.load_npz(path)


@pytest.mark.parametrize("bad,match", [
    (np.zeros((2, 2, 2, 1), np.float32), "'test'.*uint8.*float32"),
    (np.zeros((2, 2, 2), np.uint8), "'test'.*shape"),
    (np.zeros((0, 2, 2, 1), np.uint8), "'test'.*shape"),
])
def test_npz_wrong_dtype_or_shape_names_the_array(tmp_path, bad, match):
    path = _save(tmp_path / "x.npz", train=np.zeros((2, 2, 2, 1), np.uint8), test=bad)
    with pytest.raises(ValueError, match=match):
        data.load_npz(path)


def test_npz_checks_shapes_agree_and_values_fit_the_vocabulary(tmp_path):
    path = _save(tmp_path / "a.npz", train=np.zeros((2, 2, 2, 1), np.uint8), test=np.zeros((2, 3, 2, 1), np.uint8))
    with pytest.raises(ValueError, match="share"):
        data.load_npz(path)
    path = _save(tmp_path / "b.npz", train=np.full((2, 2, 2, 1), 4, np.uint8), test=np.zeros((2, 2, 2, 1), np.uint8))
    with pytest.raises(ValueError, match="`train`.*up to 4.*vocab_size=4"):
        data.load_npz(path, vocab_size=4)
    assert data.load_npz(path, vocab_size=5).vocab_size == 5
    with pytest.raises(ValueError, match="vocab_size"):
        data.load_npz(path, vocab_size=257)


# ---------------------------------------------------------------------------------------------------------------------
# Digits


def test_digits_split_shapes_levels_and_provenance():
    from sklearn import datasets
    from sklearn.model_selection import train_test_split

    ds = data.load_dataset("digits")
    assert ds.name == "digits" and ds.vocab_size == 17
    assert ds.train.shape == (1437, 8, 8, 1) and ds.test.shape == (360, 8, 8, 1)
    assert ds.train.dtype == ds.test.dtype == np.uint8
    assert set(np.unique(np.concatenate([ds.train.ravel(), ds.test.ravel()]))) == set(range(17))
    images = datasets.load_digits().images
    ref_train, ref_test = train_test_split(images, test_size=0.2, random_state=0)
    np.testing.assert_array_equal(ds.train[..., 0], ref_train)
    np.testing.assert_array_equal(ds.test[..., 0], ref_test)


def test_named_datasets_reject_unknown_names_and_other_vocabularies():
    with pytest.raises(ValueError, match="'cifar10', 'digits'"):
        data.load_dataset("mnist")
    with pytest.raises(ValueError, match="vocab_size"):
        data.load_dataset("digits", vocab_size=256)
    with pytest.raises(ValueError, match="vocab_size"):
        data.load_dataset("cifar10", vocab_size=17)


# ---------------------------------------------------------------------------------------------------------------------
# CIFAR-10 through TFDS


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def test_cifar10_under_mock_data(no_network):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=6):
        ds = data.load_dataset("cifar10")
    assert ds.name == "cifar10" and ds.vocab_size == 256
    assert ds.train.shape == ds.test.shape == (6, 32, 32, 3)
    assert ds.train.dtype == np.uint8
    assert ds.train.std() > 0  # the mocked images are random, not an all-zero placeholder
    assert "tensorflow" not in sys.modules


def test_cifar10_missing_raises_the_preparation_message_fast(tmp_path, monkeypatch, no_network):
    pytest.importorskip("tensorflow_datasets")
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    start = time.monotonic()
    with pytest.raises(data.DatasetNotPreparedError) as info:
        data.load_dataset("cifar10")
    assert time.monotonic() - start < 10.0
    message = str(info.value)
    assert str(tmp_path) in message
    assert "tfds build cifar10" in message and "array_record" in message and "TFDS_DATA_DIR" in message
    assert isinstance(info.value, ValueError)


def test_cifar10_explicit_data_dir_wins(tmp_path, monkeypatch, no_network):
    pytest.importorskip("tensorflow_datasets")
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "from_env"))
    with pytest.raises(data.DatasetNotPreparedError, match="explicit"):
        data.load_cifar10(data_dir=tmp_path / "explicit")


def test_datasource_validates_its_arrays():
    good = np.zeros((2, 2, 2, 1), np.uint8)
    with pytest.raises(ValueError, match="vocab_size"):
        data.DataSource("x", good, good, 1)
    with pytest.raises(ValueError, match="`test`.*uint8"):
        data.DataSource("x", good, good.astype(np.int32), 2)
