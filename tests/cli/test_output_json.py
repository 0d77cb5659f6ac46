import json
import math

import numpy as np
import torch

from latentfit.cli.output import print_json, to_jsonable


def test_tensors_arrays_and_non_finite_numbers_become_valid_json(capsys):
    obj = {"t": torch.tensor([[1.5, float("nan")]]), "a": np.array([1, 2]), "x": math.inf, "s": "k"}
    print_json(obj)
    back = json.loads(capsys.readouterr().out)
    assert back == {"t": [[1.5, None]], "a": [1, 2], "x": None, "s": "k"}


def test_numpy_scalars_and_tuples():
    assert to_jsonable((np.float64(0.25), np.int64(3), True)) == [0.25, 3, True]
