"""Monte-Carlo ELBO of a fitted Bayesian Gaussian mixture (full covariances), written only with
torch.distributions densities: an independent check of the closed-form ELBO."""

import warnings

import torch
from torch.distributions import Beta, Dirichlet, MultivariateNormal, Wishart


def mc_elbo(X, resp, model, n_draws, generator_seed=0):
    """E_q[log p(X, Z, π, μ, Λ) − log q(Z, π, μ, Λ)] by sampling q(θ); returns (mean, std err)."""
    torch.manual_seed(generator_seed)
    X = torch.as_tensor(X, dtype=torch.float64)
    r = torch.as_tensor(resp, dtype=torch.float64)  # (n, k)
    k, d = model.means_.shape
    S = n_draws
    nu = torch.as_tensor(model.degrees_of_freedom_)  # (k,)
    W = torch.as_tensor(model.precisions_) / nu[:, None, None]  # (k, d, d) Wishart scale
    beta = torch.as_tensor(model.mean_precision_)
    m = torch.as_tensor(model.means_)
    nu0, beta0 = model.degrees_of_freedom_prior_, model.mean_precision_prior_
    W0 = torch.linalg.inv(torch.as_tensor(model.covariance_prior_))
    m0 = torch.as_tensor(model.mean_prior_)
    g0 = model.weight_concentration_prior_

    q_lam = Wishart(nu, scale_tril=torch.linalg.cholesky(W))
    with warnings.catch_warnings():  # a component with ν near d − 1 can draw a singular Λ
        warnings.simplefilter("ignore", UserWarning)
        lam = q_lam.sample((S,))  # (S, k, d, d)
    q_mu = MultivariateNormal(m, precision_matrix=beta[:, None, None] * lam)
    mu = q_mu.sample()  # (S, k, d)
    log_q = q_lam.log_prob(lam).sum(1) + q_mu.log_prob(mu).sum(1)  # (S,)
    p_lam = Wishart(torch.tensor(nu0, dtype=torch.float64), scale_tril=torch.linalg.cholesky(W0))
    p_mu = MultivariateNormal(m0.expand(k, d), precision_matrix=beta0 * lam)
    log_p = p_lam.log_prob(lam).sum(1) + p_mu.log_prob(mu).sum(1)
    if model.weight_concentration_prior_type == "dirichlet_process":
        a, b = (torch.as_tensor(t) for t in model.weight_concentration_)
        q_v = Beta(a, b)
        v = q_v.sample((S,))  # (S, k)
        log_pi = v.log() + torch.cat(
            [torch.zeros(S, 1, dtype=v.dtype), torch.log1p(-v).cumsum(1)[:, :-1]], 1
        )
        log_q = log_q + q_v.log_prob(v).sum(1)
        log_p = log_p + Beta(torch.ones(k, dtype=v.dtype), torch.full((k,), g0)).log_prob(v).sum(1)
    else:
        q_pi = Dirichlet(torch.as_tensor(model.weight_concentration_))
        pi = q_pi.sample((S,))
        log_pi = pi.log()
        log_q = log_q + q_pi.log_prob(pi)
        log_p = log_p + Dirichlet(torch.full((k,), g0, dtype=torch.float64)).log_prob(pi)
    comp = MultivariateNormal(mu.unsqueeze(1), precision_matrix=lam.unsqueeze(1))  # (S, 1, k)
    log_lik = comp.log_prob(X[None, :, None, :])  # (S, n, k)
    data = (r * (log_pi.unsqueeze(1) + log_lik)).sum((1, 2))  # (S,)
    ent = -(r * r.clamp_min(1e-300).log()).sum()
    vals = data + log_p - log_q + ent
    return float(vals.mean()), float(vals.std() / S**0.5)
