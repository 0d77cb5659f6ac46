"""Every sampler on every device: NUTS, static HMC, a fit_map posterior, Gibbs (mixture and
HMM) and SVGD run on the CPU and, where one is present, on CUDA, with their draws, diagnostics,
ArviZ export and seeds. Small runs: the statistical checks against exact moments are those of
test_nuts.py and test_svgd.py (mean within 4 MCSE, sd within 10-15%); on CUDA they show that
the batched computation there samples the same posterior, not only that it runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.distributions as D

from latentfit.errors import ParameterError
from latentfit.estimate import GammaPoisson, fit_map
from latentfit.mcmc import sample
from latentfit.mcmc.gibbs import gibbs_gmm
from latentfit.mcmc.gibbs_hmm import gibbs_hmm
from latentfit.mcmc.result import import_arviz
from latentfit.mcmc.svgd import svgd
from tests.mcmc.test_gibbs_hmm import _series
from tests.mcmc.test_nuts import COV, MEAN

F64 = torch.float64


def _mvn_on(device):
    mean, cov = MEAN.to(device), COV.to(device)

    def log_density(x):
        return D.MultivariateNormal(mean, cov).log_prob(x)

    return log_density


def _check_moments(draws: torch.Tensor, mean, sd, sd_tol=0.10):
    """draws (c, n, d) on any device: each coordinate's mean within 4 MCSE, sd within sd_tol."""
    az = import_arviz()
    arr = draws.detach().cpu().reshape(*draws.shape[:2], -1).numpy()
    mean, sd = np.asarray(mean.cpu()).reshape(-1), np.asarray(sd.cpu()).reshape(-1)
    for j in range(arr.shape[-1]):
        x = arr[..., j]
        mcse = float(az.mcse(az.convert_to_dataset({"v": x}))["v"])
        z = (x.mean() - mean[j]) / mcse
        assert abs(z) < 4, f"coordinate {j}: mean {x.mean():.4f} vs {mean[j]:.4f} (z = {z:.2f})"
        assert abs(x.std(ddof=1) / sd[j] - 1) < sd_tol, f"coordinate {j}: sd {x.std():.4f}"


@pytest.mark.parametrize("kernel", ["nuts", "hmc"])
def test_nuts_and_hmc_sample_the_mvn_on_the_device(device, kernel):
    r = sample(
        _mvn_on(device),
        {"x": torch.zeros(3)},
        kernel=kernel,
        num_steps=5,
        metric="dense",
        num_chains=4,
        num_warmup=300,
        num_draws=300 if kernel == "nuts" else 800,
        generator=0,
        progress_bar=False,
        device=device,
    )
    assert r["x"].device.type == torch.device(device).type
    assert r.inv_metric.device.type == torch.device(device).type
    _check_moments(r["x"], MEAN, COV.diagonal().sqrt(), sd_tol=0.10 if kernel == "nuts" else 0.15)
    # the summaries that leave the device: ArviZ, the table, the diagnostics text
    assert r.to_arviz().posterior["x"].shape == (4, r.num_draws, 3)
    assert list(r.summary().index) == ["x[0]", "x[1]", "x[2]"]
    assert isinstance(r.diagnostics(), str)  # R-hat, ESS, divergences: computed off the device
    assert r.e_bfmi.shape == (4,)


def test_same_seed_same_draws_and_resume_on_the_device(device):
    kw = dict(num_chains=3, num_warmup=60, progress_bar=False, device=device)
    logp = _mvn_on(device)
    a = sample(logp, {"x": torch.zeros(3)}, num_draws=30, generator=7, **kw)
    gen = torch.Generator(device=device).manual_seed(7)
    b = sample(logp, {"x": torch.zeros(3)}, num_draws=30, generator=gen, **kw)
    assert torch.equal(a["x"], b["x"])
    longer = sample(logp, {"x": torch.zeros(3)}, num_draws=50, generator=7, **kw)
    resumed = a.resume(20, progress_bar=False)
    assert torch.equal(resumed["x"], longer["x"])


def test_a_map_fit_on_the_device_samples_its_conjugate_posterior(device):
    x = torch.poisson(torch.full((40,), 3.0, dtype=F64), generator=torch.Generator().manual_seed(3))
    prior = D.Gamma(torch.tensor(2.0, dtype=F64), torch.tensor(0.5, dtype=F64))
    exact = GammaPoisson(2.0, 0.5).update(x).posterior
    fit = fit_map("poisson", x.to(device), prior={"rate": prior}, device=device)
    r = fit.sample_posterior(
        num_chains=4, num_warmup=200, num_draws=400, generator=2, progress_bar=False
    )
    assert r["rate"].device.type == torch.device(device).type
    _check_moments(r["rate"], exact.mean, exact.stddev)


def test_gibbs_mixture_and_hmm_run_on_the_device(device):
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(60, 2, generator=g) - 3, torch.randn(60, 2, generator=g) + 3])
    mix = gibbs_gmm(x.to(device, F64), 2, num_chains=2, num_warmup=30, num_draws=60, generator=0)
    means = mix.draws["means"]  # (c, n, k, d), components ordered
    assert means.device.type == torch.device(device).type
    # two clusters 6 apart: each draw's sorted means are the clusters' centres within 0.5
    centre = means.mean((0, 1)).cpu()
    torch.testing.assert_close(centre[:, 0].sort().values, torch.tensor([-3.0, 3.0], dtype=F64),
                               atol=0.5, rtol=0)  # fmt: skip
    assert mix.summary().shape[0] > 0

    series = _series(150, seed=1).to(device)
    hmm = gibbs_hmm(series, 2, num_chains=2, num_warmup=30, num_draws=60, generator=0)
    loc = hmm.draws["means"]
    assert loc.device.type == torch.device(device).type
    assert torch.isfinite(loc).all()
    # the series' two levels are -1 and 1.5 (sd 0.6)
    torch.testing.assert_close(loc.reshape(-1, 2).mean(0).cpu().sort().values,
                               torch.tensor([-1.0, 1.5], dtype=F64), atol=0.3, rtol=0)  # fmt: skip
    assert hmm.to_arviz().posterior["means"].shape[:2] == (2, 60)


def test_svgd_on_the_device_matches_the_mvn(device):
    cov = torch.tensor([[1.0, 0.6], [0.6, 2.0]], dtype=F64, device=device)
    mean = torch.tensor([1.0, -2.0], dtype=F64, device=device)
    res = svgd(
        lambda x: D.MultivariateNormal(mean, cov).log_prob(x),
        {"x": torch.zeros(2)},
        num_particles=200,
        num_iter=400,
        step_size=0.2,
        generator=0,
        progress_bar=False,
        device=device,
    )
    x = res["x"]
    assert x.device.type == torch.device(device).type
    torch.testing.assert_close(x.mean(0), mean, atol=0.1, rtol=0)
    torch.testing.assert_close(torch.cov(x.T), cov, atol=0.15, rtol=0.1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_density_holding_cpu_tensors_sampled_on_cuda_is_named():
    """A density that closes over CPU tensors while the chains run on CUDA: the error says
    which device each is on and what to move, instead of torch's device-mismatch error."""
    with pytest.raises(ParameterError, match="cuda"):
        sample(
            lambda x: D.MultivariateNormal(MEAN, COV).log_prob(x),
            {"x": torch.zeros(3)},
            num_chains=2,
            num_warmup=10,
            num_draws=10,
            progress_bar=False,
            device="cuda",
        )


def test_the_default_gives_the_eager_draws_on_the_device(device):
    """compile="replay" (the default): on the CPU the leapfrog step traced and replayed
    (Static Runtime; the own pace's trees are a numba kernel's), elsewhere eager; either way
    the draws of the eager sampler, bit for bit (the same kernels in the same order), and a
    resumed run carries on as it ran."""
    kw = dict(num_chains=3, num_warmup=40, num_draws=30, generator=1, progress_bar=False)
    logp = _mvn_on(device)
    res = sample(logp, {"x": torch.zeros(3)}, vectorized=True, device=device, **kw)
    cpu = torch.device(device).type == "cpu"
    assert res.warmup_stats["replayed"] == (("leapfrog",) if cpu else ())
    eager = sample(logp, {"x": torch.zeros(3)}, vectorized=True, device=device, compile=False, **kw)
    assert eager.warmup_stats["replayed"] == ()
    torch.testing.assert_close(res["x"], eager["x"], rtol=0, atol=0)
    more = res.resume(20, progress_bar=False)
    torch.testing.assert_close(more["x"][:, :30], res["x"], rtol=0, atol=0)
