"""Variational objectives: objects that return a differentiable scalar, nothing about optimisers.

The model is written by the user in torch as a log-likelihood and a prior:

* ``log_likelihood(z, batch)`` → (s, b) per data point, or (s,) already summed over the batch;
  with local latents ``log_likelihood(z, z_local, batch)``. ``z`` is (s, *event) — s samples
  of the global latent —, ``z_local`` is (s, b, *event_local).
* ``prior``: a torch Distribution over z (its KL to q is taken in closed form when
  torch.distributions knows it), or a callable ``z → log p(z)`` (s,), or None when
  ``log_likelihood`` already is the whole log joint.
* ``local_prior``: a Distribution with batch shape (b,) (or broadcastable), or a callable
  ``(z, batch) → Distribution`` when it depends on the global latent.

Mini-batches (Hoffman et al. 2013): with ``n_data = N`` and a batch of b points, every
per-datum term (likelihood, local KL) is scaled by N / b and global terms are not, so the
estimate is unbiased for the full-data ELBO.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.distributions import Distribution, kl_divergence

from latentfit._gradient_cut import cut_message, unfollowed, value_and_grad_rows
from latentfit._validation import as_generator, check_positive_int
from latentfit.errors import ParameterError
from latentfit.estimate.map import prior_in_dtype
from latentfit.vi.estimators import GradientEstimator, Reparameterization, log_prob_of

__all__ = ["ELBO", "ImportanceWeightedBound", "StochasticELBO"]

KL_MODES = ("auto", "analytic", "mc")


def _as_dist(guide, *args) -> Distribution:
    return guide if isinstance(guide, Distribution) else guide(*args)


def _batch_size(batch) -> int | None:
    if batch is None:
        return None
    if isinstance(batch, torch.Tensor):
        return batch.shape[0]
    if isinstance(batch, (tuple, list)) and batch:
        return _batch_size(batch[-1])
    if isinstance(batch, dict) and batch:
        return _batch_size(next(iter(batch.values())))
    return None


def _check_n_data(n_data) -> None:
    """``n_data`` is None (the batch is all the data) or the positive number of data points."""
    if n_data is not None:
        check_positive_int(n_data, "n_data (the number of data points N)")


def _float_tensors(obj, seen=None) -> list[torch.Tensor]:
    """The floating tensors a distribution holds, through base distributions and transforms."""
    seen = set() if seen is None else seen
    if isinstance(obj, torch.Tensor):
        return [obj] if obj.is_floating_point() else []
    if isinstance(obj, list | tuple):
        return [t for v in obj for t in _float_tensors(v, seen)]
    if not isinstance(obj, Distribution | torch.distributions.Transform) or id(obj) in seen:
        return []
    seen.add(id(obj))
    return [t for v in vars(obj).values() for t in _float_tensors(v, seen)]


def _like(prior, q: Distribution, cache: dict | None = None):
    """``prior`` in the guide's dtype and device (estimate's :func:`prior_in_dtype`): a prior
    built from Python floats holds float32 tensors and torch evaluates ``log_prob`` and the KL
    in them, so a float64 model would otherwise get float32-accurate priors. A prior with
    learnable tensors (``requires_grad``) is left as it is, so that its gradients flow.
    ``cache`` keeps the cast of a prior held by the objective (cast once, not every step)."""
    if not isinstance(prior, Distribution):
        return prior
    ref = _float_tensors(q)
    held = _float_tensors(prior)
    if not ref or not held or any(t.requires_grad for t in held):
        return prior
    dtype, device = ref[0].dtype, ref[0].device
    if all(t.dtype == dtype and t.device == device for t in held):
        return prior
    key = (id(prior), dtype, device)
    if cache is not None and key in cache and cache[key][0] is prior:
        return cache[key][1]
    out = prior_in_dtype(prior, dtype, device)
    if cache is not None:
        cache[key] = (prior, out)
    return out


def _closed_form_kl(q: Distribution, p, mode: str, what: str) -> torch.Tensor | None:
    """KL(q‖p) when wanted and known to torch.distributions, else None (use Monte Carlo)."""
    if mode == "mc" or not isinstance(p, Distribution):
        if mode == "analytic":
            raise ParameterError(f"kl='analytic' needs the {what} prior as a torch Distribution")
        return None
    try:
        return kl_divergence(q, p)
    except NotImplementedError:
        if mode == "analytic":
            raise ParameterError(
                f"torch.distributions has no closed-form KL({type(q).__name__} ‖ "
                f"{type(p).__name__}) for the {what} latent; use kl='auto' or 'mc'"
            ) from None
        return None


def _check_follows(f: Callable, z: torch.Tensor, what: str, name: str) -> None:
    """A ParameterError when ``f(z)`` (a tensor, summed) changes with the latent draws ``z``
    while its gradient in them is zero (:func:`~latentfit._gradient_cut.unfollowed`): the
    reparameterised gradient reaches the guide only through ``z``, so such a term would be
    left out of the fit of the guide. Not judged where ``z`` carries no gradient (the score
    function estimator does not differentiate the model)."""
    if z is None or not z.requires_grad:
        return
    u = z.detach().reshape(-1)  # (s * event,)

    def total(v):
        out = f(v.reshape(z.shape))
        if not isinstance(out, torch.Tensor):  # refused in the bound's own words
            _per_draw(out, z, what)
        return out.sum()

    if unfollowed(value_and_grad_rows(total), u, [(name, 0, u.numel())]) is not None:
        raise ParameterError(
            cut_message(what, name, "the guide would be fitted as if it did not depend on them")
        )


class StochasticELBO:
    """The evidence lower bound E_q[log p(x, z) − log q(z)] of a user's model and guide,
    estimated by Monte Carlo for stochastic VI (Jordan et al. 1999; Hoffman et al. 2013 for
    the stochastic, mini-batch form). Not the VAE's bound (:class:`latentfit.vae.ELBO`, an
    amortised q(z | x) of a VAE).

    ``elbo(batch)`` returns a scalar whose value is the Monte-Carlo estimate of the ELBO and
    whose gradient is the chosen estimator's; maximise it (minimise ``-elbo(batch)``).

    guide : a Distribution or a module ``guide() → q(z)`` over the global latent, or None
        when the model has local latents only (``log_likelihood(None, z_local, batch)``).
    local_guide : ``local_guide(batch) → q(z_i)`` with batch shape (b,), for local latents.
    n_data : total number of data points N when ``batch`` is a mini-batch (scale N / b).
    kl : ``"auto"`` (closed form when torch knows it, else Monte Carlo), ``"analytic"``, ``"mc"``.
    """

    def __init__(
        self,
        log_likelihood: Callable,
        guide,
        prior=None,
        *,
        local_guide=None,
        local_prior=None,
        n_data: int | None = None,
        num_samples: int = 1,
        estimator: GradientEstimator | None = None,
        local_estimator: GradientEstimator | None = None,
        kl: str = "auto",
        generator: torch.Generator | None = None,
    ):
        if kl not in KL_MODES:
            raise ParameterError(f"kl must be one of {KL_MODES}, got {kl!r}")
        num_samples = check_positive_int(num_samples, "num_samples")
        _check_n_data(n_data)
        if (local_guide is None) != (local_prior is None):
            raise ParameterError("local latents need both local_guide and local_prior")
        if guide is None and local_guide is None:
            raise ParameterError("give a guide for the global latent, a local_guide, or both")
        self.log_likelihood, self.guide, self.prior = log_likelihood, guide, prior
        self.local_guide, self.local_prior = local_guide, local_prior
        self._priors: dict = {}  # priors cast to the guide's dtype (see _like)
        self.n_data, self.num_samples, self.kl = n_data, num_samples, kl
        self.estimator = estimator or Reparameterization()
        self.local_estimator = local_estimator or Reparameterization()
        needs = self.estimator.needs_analytic_kl or self.local_estimator.needs_analytic_kl
        if needs and kl == "mc":
            raise ParameterError(
                "GumbelSoftmax(hard=False) draws relaxed samples that have no density under a "
                "categorical q: use kl='auto' (closed-form KL) or GumbelSoftmax(hard=True)"
            )
        # an int seed starts one stream that every call draws on (not the same draws each call)
        self.generator = as_generator(generator)
        self._followed = False  # the model's terms checked to follow z (once, first call)

    def _scale(self, batch, ll: torch.Tensor) -> float:
        if self.n_data is None:
            return 1.0
        b = ll.shape[1] if ll.dim() == 2 else _batch_size(batch)
        if not b:
            raise ParameterError("n_data was given but the batch size cannot be read from batch")
        return self.n_data / b

    def __call__(self, batch=None) -> torch.Tensor:
        est, s = self.estimator, self.num_samples
        if self.guide is None:  # local latents only (the VAE case)
            data, kl_local, scale = self._local_terms(None, batch)
            self._followed = True
            return data.mean(0) - scale * kl_local
        q = _as_dist(self.guide)
        z = est.sample(q, s, self.generator)  # (s, *event)
        kl_mode_g = "analytic" if est.needs_analytic_kl and self.kl == "auto" else self.kl
        prior = _like(self.prior, q, self._priors)
        if not self._followed and self.local_guide is None:
            _check_follows(lambda v: self.log_likelihood(v, batch), z, "log_likelihood", "z")
        if not self._followed and callable(prior) and not isinstance(prior, Distribution):
            _check_follows(prior, z, "the prior", "z")
        kl_g = _closed_form_kl(q, prior, kl_mode_g, "global")
        kl_g = None if kl_g is None else _total_kl(kl_g, q, "global")
        if self.local_guide is None:
            ll = _per_draw(self.log_likelihood(z, batch), z, "log_likelihood", data=True)
            scale = self._scale(batch, ll)
            data = scale * (ll.sum(-1) if ll.dim() == 2 else ll)  # (s,)
            kl_local = 0.0
        else:
            data, kl_local, scale = self._local_terms(z, batch)
        if kl_g is None:
            log_p = (
                0.0
                if prior is None
                else _per_draw(
                    log_prob_of(prior, z) if isinstance(prior, Distribution) else prior(z),
                    z,
                    "the prior's log-density",
                )
            )
            f = data + log_p - _per_draw(log_prob_of(q, z), z, "the guide's log-density")  # (s,)
            kl_g = 0.0
        else:
            f = data
        log_q = (
            _per_draw(log_prob_of(q, z), z, "the guide's log-density") if est.needs_log_q else None
        )
        self._followed = True
        return est.surrogate(f, log_q).mean(0) - kl_g - scale * kl_local

    def _local_terms(self, z, batch):
        est, s = self.local_estimator, self.num_samples
        ql = _as_dist(self.local_guide, batch)  # batch_shape (b,)
        zl = est.sample(ql, s, self.generator)  # (s, b, *event_local)
        if not self._followed:
            _check_follows(
                lambda v: self.log_likelihood(z, v, batch), zl, "log_likelihood", "z_local"
            )
            if z is not None:
                _check_follows(
                    lambda v: self.log_likelihood(v, zl, batch), z, "log_likelihood", "z"
                )
        ll = self.log_likelihood(z, zl, batch)  # (s, b)
        if ll.dim() != 2:
            raise ParameterError(
                "with local latents log_likelihood must return one value per sample and data "
                f"point, shape (num_samples, batch); got {tuple(ll.shape)}"
            )
        scale = self._scale(batch, ll)
        mode = "analytic" if est.needs_analytic_kl and self.kl == "auto" else self.kl
        pl = (
            _like(self.local_prior, ql, self._priors)
            if isinstance(self.local_prior, Distribution)
            else None
        )
        kl_l = _closed_form_kl(ql, pl, mode, "local") if pl is not None else None
        if kl_l is None:
            if pl is None:
                if mode == "analytic":
                    raise ParameterError("kl='analytic' needs local_prior as a torch Distribution")
                pl = _like(self.local_prior(z, batch), ql)
            log_p = _per_point(log_prob_of(pl, zl), zl, "the local prior's log-density")
            f = ll + log_p - _per_point(log_prob_of(ql, zl), zl, "the local guide's log-density")
            kl_sum = 0.0
        else:
            f, kl_sum = ll, kl_l.sum()
        log_q = (
            _per_point(log_prob_of(ql, zl), zl, "the local guide's log-density")
            if est.needs_log_q
            else None
        )
        return scale * est.surrogate(f, log_q).sum(-1), kl_sum, scale


class ImportanceWeightedBound:
    """The importance-weighted bound log (1/K) Σ_k p(x, z_k) / q(z_k), z_k ~ q
    (Burda et al. 2016). K = 1 is the ELBO; it is non-decreasing in K in expectation and
    tends to log p(x).

    Either a global latent (``guide``/``prior``; no mini-batch scaling, the weights do not
    factor over data points) or local latents only (``local_guide``/``local_prior`` with
    ``guide=None``: one bound per data point, summed and scaled by N / b).
    """

    def __init__(
        self,
        log_likelihood: Callable,
        guide=None,
        prior=None,
        *,
        local_guide=None,
        local_prior=None,
        n_data: int | None = None,
        num_samples: int = 8,
        generator: torch.Generator | None = None,
    ):
        if (guide is None) == (local_guide is None):
            raise ParameterError("give either a global guide or a local_guide (not both)")
        num_samples = check_positive_int(num_samples, "num_samples")
        _check_n_data(n_data)
        if guide is not None and n_data is not None:
            raise ParameterError(
                "the importance-weighted bound of a global latent does not factor over data "
                "points, so it has no mini-batch form; use the ELBO with n_data instead"
            )
        self.log_likelihood, self.guide, self.prior = log_likelihood, guide, prior
        self.local_guide, self.local_prior = local_guide, local_prior
        self._priors: dict = {}  # priors cast to the guide's dtype (see _like)
        self.n_data, self.num_samples = n_data, num_samples
        self.generator = as_generator(generator)  # as StochasticELBO's
        self._est = Reparameterization()
        self._followed = False  # as StochasticELBO's

    def __call__(self, batch=None) -> torch.Tensor:
        K = self.num_samples
        if self.guide is not None:
            q = _as_dist(self.guide)
            z = self._est.sample(q, K, self.generator)  # (K, *event)
            if not self._followed:
                _check_follows(lambda v: self.log_likelihood(v, batch), z, "log_likelihood", "z")
                if callable(self.prior) and not isinstance(self.prior, Distribution):
                    _check_follows(self.prior, z, "the prior", "z")
                self._followed = True
            ll = _per_draw(self.log_likelihood(z, batch), z, "log_likelihood", data=True)
            ll = ll.sum(-1) if ll.dim() == 2 else ll  # (K,)
            prior = _like(self.prior, q, self._priors)
            log_p = (
                0.0
                if prior is None
                else _per_draw(
                    prior.log_prob(z) if isinstance(prior, Distribution) else prior(z),
                    z,
                    "the prior's log-density",
                )
            )
            log_w = ll + log_p - _per_draw(q.log_prob(z), z, "the guide's log-density")  # (K,)
            return torch.logsumexp(log_w, 0) - math.log(K)
        ql = _as_dist(self.local_guide, batch)
        zl = self._est.sample(ql, K, self.generator)  # (K, b, *event)
        if not self._followed:
            _check_follows(
                lambda v: self.log_likelihood(None, v, batch), zl, "log_likelihood", "z_local"
            )
            self._followed = True
        ll = self.log_likelihood(None, zl, batch)  # (K, b)
        pl = (
            _like(self.local_prior, ql, self._priors)
            if isinstance(self.local_prior, Distribution)
            else _like(self.local_prior(None, batch), ql)
        )
        log_p = _per_point(pl.log_prob(zl), zl, "the local prior's log-density")
        log_w = ll + log_p - _per_point(ql.log_prob(zl), zl, "the local guide's log-density")
        per_point = torch.logsumexp(log_w, 0) - math.log(K)  # (b,)
        scale = 1.0 if self.n_data is None else self.n_data / per_point.shape[0]
        return scale * per_point.sum()


#: The former name, kept importable because README's stochastic-VI example and the tests of
#: latentfit.vi use it; :class:`latentfit.vae.ELBO` is the VAE's bound, a different object.
ELBO = StochasticELBO


def _per_draw(value, z: torch.Tensor, what: str, *, data: bool = False) -> torch.Tensor:
    """``value`` as one number per draw of the global latent ``z`` (s, *event): (s,) as it is;
    (s, *event) (independent priors per coordinate) summed over the coordinates; for the
    log-likelihood (``data``) also (s, b), one per data point. Any other shape is refused: it
    broadcast silently (a prior of shape (3,) on a 1-d latent made the bound a (3,) tensor)."""
    if not isinstance(value, torch.Tensor):
        raise ParameterError(
            f"{what} must return a tensor with one value per draw (num_samples,), got "
            f"{type(value).__name__}"
        )
    s = z.shape[0]
    if value.shape == (s,):
        return value
    if data and value.dim() == 2 and value.shape[0] == s:
        return value
    if value.dim() > 1 and value.shape == z.shape[: value.dim()]:
        # one term per coordinate (a Normal over a vector, d Categoricals drawn as one-hot
        # (s, d, k)): independent coordinates, whose log-densities add up
        return value.sum(tuple(range(1, value.dim())))
    raise ParameterError(
        f"{what} returned shape {tuple(value.shape)} for {s} draws of a latent of shape "
        f"{tuple(z.shape[1:])}: it must be (num_samples,)"
        + (" or (num_samples, batch)" if data else f" or {tuple(z.shape)}")
    )


def _per_point(value: torch.Tensor, zl: torch.Tensor, what: str) -> torch.Tensor:
    """A log-density of the local latents ``zl`` (s, b, *event) as one number per draw and
    data point, (s, b): summed over the coordinates where it holds one per coordinate (a
    ``Normal(0, 1)`` prior on a vector latent gives (s, b, d)), as :func:`_per_draw` does
    for a global latent. Added to the log-likelihood (s, b) unsummed, it broadcast into a
    torch shape error, or, where the sizes happened to agree, into a wrong bound."""
    if value.dim() >= 2 and value.shape == zl.shape[: value.dim()]:
        return value.sum(tuple(range(2, value.dim()))) if value.dim() > 2 else value
    raise ParameterError(
        f"{what} returned shape {tuple(value.shape)} for {zl.shape[0]} draws of local latents "
        f"of shape {tuple(zl.shape[1:])}: it must be (num_samples, batch) or "
        f"{tuple(zl.shape)}; give the local guide and prior batch shape (batch,) or "
        "(batch, *event)"
    )


def _total_kl(kl: torch.Tensor, q: Distribution, what: str) -> torch.Tensor:
    """A closed-form KL(q ‖ p) as one number: summed over q's batch dimensions (independent
    coordinates, e.g. a ``Normal`` guide over a vector or d ``Categorical`` latents), which
    was returned as a vector "bound". A prior whose batch shape broadcasts q's to a larger
    one is refused: it describes a different latent."""
    if kl.shape != q.batch_shape:
        raise ParameterError(
            f"KL(q ‖ p) of the {what} latent has shape {tuple(kl.shape)}, the guide's batch "
            f"shape is {tuple(q.batch_shape)}: the prior describes a latent of another shape; "
            "give it the guide's batch and event shapes"
        )
    return kl.sum()
