"""A model file with one stored tensor altered, for the tests of how loading, scoring and
sampling treat a damaged or overflowing file."""

import warnings

from safetensors import safe_open
from safetensors.torch import save_file


def altered(tmp_path, model, data, key, value, whole=False):
    """``model`` fitted to ``data`` and saved, and that file with tensor ``key``'s first entry
    (or every entry) set to ``value``, written without its checksum: the two paths."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(data)
    path = model.save(tmp_path / "m.lf")
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = f.metadata()
    if whole:
        tensors[key].fill_(value)
    else:
        tensors[key].view(-1)[0] = value
    bad = tmp_path / "bad.lf"
    save_file(tensors, str(bad), metadata={"latentfit": meta["latentfit"]})
    return path, bad
