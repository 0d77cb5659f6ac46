"""The VAE data sources: bundled MNIST, scikit-learn digits, IDX files, user arrays."""

import struct

import numpy as np
import pytest
import torch

from latentfit.vae.data import load_vae_data


def _write_idx(path, array: np.ndarray):
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_bundled_mnist_and_digits():
    d = load_vae_data("mnist")
    assert d.train.shape == (3600, 784) and d.val.shape == (400, 784)
    assert d.test.shape == (1000, 784)
    assert d.intensities and d.image_shape == (1, 28, 28)
    assert float(d.train.min()) >= 0 and float(d.train.max()) <= 1
    g = load_vae_data("digits", val_fraction=0.25)
    assert g.train.shape[1] == 64 and g.train.shape[0] + g.val.shape[0] + g.test.shape[0] == 1797
    assert g.test.shape[0] == 359 and g.val.shape[0] == 360  # 20% of all, 25% of the rest
    assert float(g.train.max()) == 1.0  # grey levels 0..16 scaled by 16


def test_idx_folder(tmp_path):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 12), ("t10k", 5)):
        images = rng.integers(0, 256, size=(n, 28, 28))
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, size=n))
        if prefix == "train":
            first = images[0]
    d = load_vae_data("mnist-idx", idx_folder=tmp_path)
    # the IDX test file is the test split; validation rows come from the training file
    assert d.test.shape == (5, 784) and d.val.shape == (1, 784) and d.train.shape == (11, 784)
    assert d.split.test.tolist() == list(range(12, 17))
    row0 = torch.from_numpy(first.reshape(-1) / 255.0).float()
    where = d.train if 0 in d.split.train.tolist() else d.val
    torch.testing.assert_close(where[0], row0)
    with pytest.raises(ValueError, match="needs the folder"):
        load_vae_data("mnist-idx")


def test_user_array(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.random.default_rng(0).normal(size=(40, 3)))
    d = load_vae_data(str(path), test_fraction=0.25, val_fraction=0.1)
    assert d.train.shape == (27, 3) and d.val.shape == (3, 3) and d.test.shape == (10, 3)
    assert not d.intensities
    with pytest.raises(FileNotFoundError, match="no data file"):
        load_vae_data(str(tmp_path / "missing.csv"))


def test_a_value_beyond_float32_advises_rescaling_only(tmp_path):
    from latentfit.errors import DataError

    path = tmp_path / "huge.csv"
    x = np.random.default_rng(0).normal(size=(20, 2))
    x[3, 1] = 1e300
    np.savetxt(path, x, delimiter=",")
    # VAEs compute in float32 and load_vae_data takes no dtype: dtype=float64 is no advice here
    with pytest.raises(DataError, match=r"row 3, column 1, .*standardise the columns\)$"):
        load_vae_data(str(path))
