"""torchvision datasets read from tiny files in their real formats, your own data (npz, image folders),
their validation, and the offline error that says where the files go. No test touches the network."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_formats import CIFAR10_NAMES, accept_cifar10_files, block_network, write_cifar10, write_mnist

from core.config import cache_dir
from core.engine.data import DATASETS, is_dataset_name, load_dataset
from core.engine.data_own import fingerprint, own_data_name, stratified_split
from core.errors import LogitscopeError


@pytest.fixture(autouse=True)
def fresh_memo():
    """load_dataset memoises per process; tests reuse names with different files."""
    from core.engine.data import _load_cached

    _load_cached.cache_clear()
    yield
    _load_cached.cache_clear()


def test_real_datasets_are_registered():
    assert {"mnist", "fashion_mnist", "cifar10", "digits"} <= set(DATASETS)
    assert is_dataset_name("npz:whatever.npz") and is_dataset_name("folder:x") and not is_dataset_name("nope")


def test_mnist_reads_gzipped_idx_files_without_writing_into_the_data_dir(tmp_path):
    data_dir = tmp_path / "data"
    arrays = write_mnist(data_dir, gz=True)
    before = sorted(p.name for p in (data_dir / "MNIST" / "raw").iterdir())
    ds = load_dataset("mnist", str(data_dir))
    assert ds.x_train.shape == (12, 1, 28, 28) and ds.x_test.shape == (6, 1, 28, 28)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert torch.allclose(ds.x_train[:, 0] * 255, torch.from_numpy(arrays["train-images-idx3-ubyte"]).float(), atol=1e-3)
    assert ds.y_test.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    assert ds.classes == tuple("0123456789")
    assert sorted(p.name for p in (data_dir / "MNIST" / "raw").iterdir()) == before  # unpacked into the cache
    assert (cache_dir() / "datasets" / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file()


def test_fashion_mnist_reads_plain_idx_files(tmp_path):
    arrays = write_mnist(tmp_path, folder="FashionMNIST", n_train=10, n_test=4, gz=False, seed=1)
    ds = load_dataset("fashion_mnist", str(tmp_path))
    assert ds.x_test.shape == (4, 1, 28, 28) and ds.num_classes == 10
    assert ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot"
    assert ds.y_train.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert 0.0 <= float(ds.x_train.min()) and float(ds.x_train.max()) <= 1.0


def test_cifar10_reads_python_batches_in_channel_order(tmp_path, monkeypatch):
    arrays = write_cifar10(tmp_path)
    accept_cifar10_files(monkeypatch, tmp_path)
    ds = load_dataset("cifar10", str(tmp_path))
    assert ds.x_train.shape == (20, 3, 32, 32) and ds.x_test.shape == (6, 3, 32, 32)
    assert ds.classes == tuple(CIFAR10_NAMES)
    # pixel (row 5, column 7) of image 3, green channel: HWC array [3, 5, 7, 1]
    assert ds.x_train[3, 1, 5, 7].item() == pytest.approx(arrays["x_train"][3, 5, 7, 1] / 255)
    assert ds.y_test.tolist() == arrays["y_test"].tolist()


def test_cifar10_files_that_fail_torchvisions_checksum_are_refused(tmp_path):
    write_cifar10(tmp_path)  # not the official files, and their MD5 sums are not accepted here
    with pytest.raises(LogitscopeError, match="corrupted or not the official files"):
        load_dataset("cifar10", str(tmp_path))


@pytest.mark.parametrize("name, folder, files", [
    ("mnist", "MNIST/raw", "train-images-idx3-ubyte"),
    ("fashion_mnist", "FashionMNIST/raw", "t10k-labels-idx1-ubyte"),
    ("cifar10", "cifar-10-batches-py", "data_batch_1"),
])
def test_offline_and_missing_says_which_files_go_where(tmp_path, monkeypatch, name, folder, files):
    block_network(monkeypatch)
    with pytest.raises(LogitscopeError) as err:
        load_dataset(name, str(tmp_path / "empty"))
    msg = str(err.value)
    assert f"<DATA_DIR>/{folder}/" in msg and files in msg and "--data-dir" in msg and "downloading it failed" in msg
    assert str(cache_dir() / "datasets") in msg


# ---- your own data -------------------------------------------------------------------------------

def _npz(path, n=30, k=3, layout="nhwc", **extra):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    if layout == "nchw":
        images = images.transpose(0, 3, 1, 2)
    elif layout == "nhw":
        images = images[..., 0]
    arrays = {"images": images, "labels": np.arange(n) % k, **extra}
    np.savez(path, **arrays)
    return arrays


def test_npz_with_class_names_splits_80_20_per_class(tmp_path):
    arrays = _npz(tmp_path / "mine.npz", class_names=np.array(["cat", "dog", "owl"]))
    ds = load_dataset(f"npz:{tmp_path / 'mine.npz'}")
    assert ds.classes == ("cat", "dog", "owl") and ds.shape == (3, 8, 8)
    assert len(ds.y_train) == 24 and len(ds.y_test) == 6
    assert torch.bincount(ds.y_test, minlength=3).tolist() == [2, 2, 2]  # stratified: 20% of each class's 10
    # every test image is one of the file's images, with its label
    img = torch.from_numpy(arrays["images"]).permute(0, 3, 1, 2).float() / 255
    for x, y in zip(ds.x_test, ds.y_test):
        match = (img - x).abs().flatten(1).amax(1) < 1e-6
        assert match.sum() == 1 and arrays["labels"][int(match.nonzero())] == y


@pytest.mark.parametrize("layout, channels", [("nchw", 3), ("nhw", 1)])
def test_npz_accepts_nchw_and_grey_images(tmp_path, layout, channels):
    _npz(tmp_path / "x.npz", layout=layout)
    ds = load_dataset("npz:x.npz", str(tmp_path))  # relative to data_dir
    assert ds.shape == (channels, 8, 8) and ds.classes == ("0", "1", "2")


def test_npz_with_its_own_split_keeps_it(tmp_path):
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "s.npz", x_train=rng.integers(0, 256, (7, 6, 6, 1), dtype=np.uint8), y_train=np.arange(7) % 2,
             x_test=rng.integers(0, 256, (3, 6, 6, 1), dtype=np.uint8), y_test=np.array([1, 0, 1]))
    ds = load_dataset(f"npz:{tmp_path / 's.npz'}")
    assert len(ds.y_train) == 7 and ds.y_test.tolist() == [1, 0, 1] and ds.shape == (1, 6, 6)


def test_stratified_split_is_deterministic_and_disjoint():
    labels = np.repeat(np.arange(4), [10, 5, 2, 1])
    a, b = stratified_split(labels), stratified_split(labels)
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    train, test = a
    assert sorted(np.concatenate(a).tolist()) == list(range(len(labels)))
    assert np.bincount(labels[test], minlength=4).tolist() == [2, 1, 1, 0]  # a single image stays in training
    assert not np.array_equal(stratified_split(labels, seed=1)[1], test)


@pytest.mark.parametrize("arrays, message", [
    ({"images": np.zeros((4, 8, 8), np.float32), "labels": np.zeros(4, int)}, "must be uint8"),
    ({"images": np.zeros((4, 8, 8, 5), np.uint8), "labels": np.zeros(4, int)}, "C = 1 .grey. or 3"),
    ({"images": np.zeros((4, 8, 8), np.uint8), "labels": np.zeros(3, int)}, "one label per image"),
    ({"images": np.zeros((4, 8, 8), np.uint8), "labels": np.array([0, 1, 2, -1])}, "class indices"),
    ({"images": np.zeros((4, 8, 8), np.uint8), "labels": np.array([0, 1, 2, 3]), "class_names": np.array(["a", "b"])},
     r"< 2 \(the number of class_names\)"),
    ({"images": np.zeros((4, 8, 8), np.uint8), "labels": np.zeros(4, np.float32)}, "must be integers"),
    ({"images": np.zeros((4, 8, 8), np.uint8), "label": np.zeros(4, int)}, "expected images and labels"),
    ({"images": np.zeros((4, 8, 8), np.uint8), "labels": np.zeros(4, int),
      "class_names": np.array(["a", 1], dtype=object)}, "pickled object arrays"),
])
def test_bad_npz_files_are_refused_with_what_to_do(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(LogitscopeError, match=message):
        load_dataset(f"npz:{tmp_path / 'bad.npz'}")


def test_not_an_npz_or_missing_path(tmp_path):
    (tmp_path / "fake.npz").write_text("images,labels\n")
    with pytest.raises(LogitscopeError, match="not an .npz archive"):
        load_dataset(f"npz:{tmp_path / 'fake.npz'}")
    with pytest.raises(LogitscopeError, match="is not an .npz file"):
        load_dataset(f"npz:{tmp_path / 'missing.npz'}")
    with pytest.raises(LogitscopeError, match=r"npz:<path>"):
        load_dataset("no_such_dataset")


def _png_folder(root, sizes=None, modes=("L", "RGB"), per_class=5):
    rng = np.random.default_rng(0)
    for c, mode in zip(("b_cat", "a_dog"), modes):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            h, w = (sizes or {}).get((c, i), (10, 12))
            shape = (h, w) if mode == "L" else (h, w, 3)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(root / c / f"{i}.png")  # L or RGB
    (root / "a_dog" / "notes.txt").write_text("not an image: ignored")


def test_image_folder_one_subfolder_per_class(tmp_path):
    _png_folder(tmp_path / "imgs")
    ds = load_dataset(f"folder:{tmp_path / 'imgs'}")
    assert ds.classes == ("a_dog", "b_cat")  # sorted folder names
    assert ds.shape == (3, 10, 12)  # one RGB class makes the dataset RGB (H=10, W=12)
    assert len(ds.y_train) == 8 and torch.bincount(ds.y_test).tolist() == [1, 1]
    grey = Image.open(tmp_path / "imgs" / "b_cat" / "0.png")
    stacked = torch.cat([ds.x_train, ds.x_test])
    want = torch.from_numpy(np.array(grey.convert("RGB"))).permute(2, 0, 1).float() / 255
    assert ((stacked - want).abs().flatten(1).amax(1) < 1e-6).sum() == 1


def test_image_folder_with_train_and_test_and_grey_images(tmp_path):
    _png_folder(tmp_path / "train", modes=("L", "L"), per_class=3)
    _png_folder(tmp_path / "test", modes=("L", "L"), per_class=2)
    ds = load_dataset(f"folder:{tmp_path}")
    assert ds.shape == (1, 10, 12) and len(ds.y_train) == 6 and ds.y_test.tolist() == [0, 0, 1, 1]


def test_image_folder_of_mixed_sizes_is_refused(tmp_path):
    _png_folder(tmp_path, sizes={("a_dog", 2): (11, 12)})
    with pytest.raises(LogitscopeError, match="same size .Logitscope does not resize"):
        load_dataset(f"folder:{tmp_path}")


def test_image_folder_with_an_empty_class_is_refused(tmp_path):
    _png_folder(tmp_path)
    (tmp_path / "c_empty").mkdir()
    with pytest.raises(LogitscopeError, match="holds no PNG or JPEG"):
        load_dataset(f"folder:{tmp_path}")


def test_canonical_name_follows_the_content(tmp_path):
    _npz(tmp_path / "m.npz")
    name = own_data_name("npz:m.npz", str(tmp_path))
    assert name == f"npz:{(tmp_path / 'm.npz').resolve()}@{fingerprint(tmp_path / 'm.npz')}"
    assert load_dataset(name).name == name
    _npz(tmp_path / "m.npz", n=20)  # the file changes: the old name no longer applies
    assert own_data_name("npz:m.npz", str(tmp_path)) != name
    from core.engine.data import _load_cached

    _load_cached.cache_clear()
    with pytest.raises(LogitscopeError, match="has changed"):
        load_dataset(name)
