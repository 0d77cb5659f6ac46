"""The importance-sampled log p(x): its work refused up front, its memory bounded."""

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from latentfit.errors import ResourceLimitError
from latentfit.vae import build_model, marginal_log_likelihood
from tests.vae.test_objectives import linear_gaussian_vae


def decoder_calls(model):
    """The rows (samples x data points) of every decoder call, recorded by a hook."""
    rows = []
    model.decoder.register_forward_hook(
        lambda _m, args, _out: rows.append(args[0].shape[:-1].numel())
    )
    return rows


def test_a_k_off_by_digits_is_refused_before_the_first_sample():
    # k=10**12 on 50 rows ran for months (2e6 samples a second on one core), without a word
    model = build_model(x_dim=3, z_dim=2, hidden=[8], likelihood="gaussian", seed=0)
    X = torch.randn(50, 3, generator=torch.Generator().manual_seed(0))

    def refuse(*_):
        raise AssertionError("a sample was drawn before the k was refused")

    model.decoder.register_forward_hook(refuse)
    with pytest.raises(ResourceLimitError) as err:
        marginal_log_likelihood(model, X, k=10**12)
    # the largest k that fits, counted independently: 50 rows x k x (146 weights + 4096)
    weights = sum(p.numel() for p in model.parameters())
    assert weights == 146
    largest = 10**15 // (50 * (weights + 4096))  # MAX_WORK: about a day of one core
    text = str(err.value)
    assert f"use k <= {largest:,}" in text and "k=1,000,000,000,000" in text
    assert "50,000,000,000,000 samples" in text and "max_work=None" in text


def test_a_decoder_call_holds_no_more_rows_than_the_memory_available(monkeypatch):
    # the rows of a decoder call were max_rows // batch_size samples of each row whatever the
    # memory: a 256-level categorical likelihood holds 3 x 256 numbers a value, 2.4 MB a row of
    # 784 pixels, so 50,000 rows of MNIST would have needed 118 GB
    model, _, b, cov = linear_gaussian_vae()
    with torch.no_grad():
        model.encoder.head.bias[2:] += np.log(2.0)  # q twice as wide as the posterior
    X = torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    # a row of 4 values, no spec: 4 x 4 + 4 x 4 numbers of 8 bytes; a quarter of the memory
    monkeypatch.setattr("latentfit._memory.available_memory", lambda device=None: 4 * 256 * 40)
    rows = decoder_calls(model)
    res = marginal_log_likelihood(
        model, X, k=5000, batch_size=5, generator=torch.Generator().manual_seed(4)
    )
    assert max(rows) == 40 and sum(rows) == 5 * 5000
    # the same estimate as without the limit: 0.03 nats is ~4 standard errors (see
    # test_k5000_estimate_matches_closed_form_with_an_inexact_encoder)
    truth = multivariate_normal(b.numpy(), cov).logpdf(X.numpy())
    np.testing.assert_allclose(res.log_px.numpy(), truth, atol=0.03)


def test_a_row_that_does_not_fit_at_all_is_refused(monkeypatch):
    model, *_ = linear_gaussian_vae()
    monkeypatch.setattr("latentfit._memory.available_memory", lambda device=None: 100)
    X = torch.zeros(2, 4, dtype=torch.float64)
    with pytest.raises(ResourceLimitError, match="one sample of z for one row"):
        marginal_log_likelihood(model, X, k=10)
