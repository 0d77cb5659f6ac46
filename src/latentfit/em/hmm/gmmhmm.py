"""GMMHMM: a hidden Markov model whose state emissions are Gaussian mixtures of ``n_mix``
components (hmmlearn's ``GMMHMM`` interface), fitted by Baum-Welch with the mixture
responsibilities taken inside each state: the E-step gives each row's state posterior, and
within a state its components' responsibilities, from which the M-step updates the mixture
weights, means and covariances. The helpers it shares with GaussianHMM live in
:mod:`latentfit.em.hmm.gaussian`."""

from __future__ import annotations

import warnings
from typing import ClassVar

import numpy as np
import torch

from latentfit._validation import check_allocation, check_distribution
from latentfit.em.gaussian import (
    COVARIANCE_TYPES,
    DegenerateComponentError,
    describe_degenerate,
    weighted_mean,
)
from latentfit.em.hmm import emissions as E
from latentfit.em.hmm.gaussian import (
    _check_covariance_type,
    _check_positive_definite,
    _ContinuousHMM,
    _data_cov,
    _lift_lost,
    _lift_singular,
)
from latentfit.em.hmm.online import OnlineHMMMixin
from latentfit.em.hmm.settings import Prior
from latentfit.em.hmm.stored import covariance_stored
from latentfit.em.initialize import kmeans, nearest_center
from latentfit.em.online import translate_moment_stats
from latentfit.errors import ParameterError, PriorWarning, user_stacklevel
from latentfit.io import Stored, serializable

__all__ = ["GMMHMM"]


@serializable
class GMMHMM(OnlineHMMMixin, _ContinuousHMM):
    """Hidden Markov model whose emissions are Gaussian mixtures of ``n_mix`` components.

    hmmlearn's ``GMMHMM`` interface: ``weights_`` (k, n_mix), ``means_`` (k, n_mix, d),
    ``covars_`` (spherical (k, n_mix), diag (k, n_mix, d), full (k, n_mix, d, d), tied
    (k, d, d)), and its priors with their type-dependent defaults (the constructor arguments
    are left as given; the defaults are filled in at fit time). The covariance update takes
    the scatter about the *new* means (the exact M-step; hmmlearn uses the previous means).
    """

    _emission_letters = "mcw"
    _emission_attributes = ("weights_", "means_", "covars_")
    #: ``degenerate_components_`` lists (state, mixture component) pairs
    _state_fields: ClassVar[dict[str, str]] = {"degenerate_components_": "int_pairs"}

    def __init__(
        self,
        n_components=1,
        n_mix=1,
        min_covar=1e-3,
        startprob_prior=1.0,
        transmat_prior=1.0,
        weights_prior=1.0,
        means_prior=0.0,
        means_weight=0.0,
        covars_prior=None,
        covars_weight=None,
        algorithm="viterbi",
        covariance_type="diag",
        random_state=None,
        n_iter=10,
        tol=1e-2,
        verbose=False,
        params="stmcw",
        init_params="stmcw",
        implementation="log",
        n_init=1,
        device=None,
        dtype="float64",
    ):
        self._set_arguments(locals())

    def _check_parameters(self):
        if not isinstance(self.n_mix, int | np.integer) or self.n_mix < 1:
            raise ParameterError(f"n_mix must be a positive integer, got {self.n_mix!r}")
        super()._check_parameters()
        _check_covariance_type(self.covariance_type)

    def _validate_X(self, X, *, fitting: bool) -> torch.Tensor:
        X = super()._validate_X(X, fitting=fitting)
        if fitting:
            self._check_spherical_prior(X.shape[1])
        return X

    def _check_spherical_prior(self, d: int) -> None:
        """hmmlearn's default spherical ``covars_prior``, Ψ = −(n_mix + 2)/2, makes the update
        σ² = (2β + Σ γ r |x − μ|²) / (d (n + 1) + 2 (Ψ + 1)) the likelihood's own (denominator
        d·n) only for d = n_mix (hmmlearn's diag default, −1.5, is the per-feature one). For
        d < n_mix the prior ∝ σ^(n_mix − d) inflates every variance, and a component of mass
        n ≤ (n_mix − d)/d has no update at all (its denominator is not positive): two clusters
        at 0 and 8 (d = 1, n_mix = 5, random_state=1) were fitted as one state of components at
        the data's centre with variances 18 to 2862, log-likelihood −282.6 where the flat prior
        finds −142.6. Said, not changed: the default is hmmlearn's."""
        m = self.n_mix
        if self.covariance_type != "spherical" or self.covars_prior is not None or d >= m:
            return
        if "c" not in self.params:
            return
        warnings.warn(
            f"GMMHMM: covariance_type='spherical' with n_features={d} < n_mix={m}: the "
            f"default covars_prior (hmmlearn's, {-(m + 2) / 2:g} here) is flat only when the "
            "data have as many features as each state has mixture components; here it favours "
            f"large variances (a prior growing as sigma^{m - d}), inflates every variance "
            f"update, and leaves a mixture component holding {(m - d) / d:g} rows or fewer "
            "without one, so the fit can drift to broad components over all the data. Pass "
            f"covars_prior={-(d + 2) / 2:g} (no prior: the likelihood's own update), or use "
            "covariance_type='diag'.",
            PriorWarning,
            stacklevel=user_stacklevel(),
        )

    def _prior_specs(self, d):
        """hmmlearn's GMMHMM priors (None: its defaults, filled in by
        :func:`~latentfit.em.hmm.emissions.gmm_priors`): Dirichlet weights > 0, normal means
        with weights >= 0, and for the covariances (hmmlearn's parametrisation) an
        inverse-Wishart scale matrix with degrees of freedom of any sign (full, tied: the
        default is negative) or an inverse-gamma shape of any sign (its default is negative)
        with a scale >= 0 (diag, spherical)."""
        k, m, ct = self.n_components, self.n_mix, self.covariance_type
        known = d is not None and ct in COVARIANCE_TYPES
        matrix = ct in ("full", "tied")
        cov = {"spherical": (k, m), "diag": (k, m, d), "full": (k, m, d, d), "tied": (k, d, d)}
        weight = {"spherical": (k, m), "diag": (k, m, d), "full": (k, m), "tied": (k,)}
        return {
            **super()._prior_specs(d),
            "weights_prior": Prior(
                "positive", ((k, m),), "Dirichlet concentrations of every state's n_mix weights"
            ),
            "means_prior": Prior(
                "any", ((k, m, d),) if known else None, "the components' prior means"
            ),
            "means_weight": Prior(
                "nonnegative", ((k, m),), "the prior means' weight, one per component"
            ),
            "covars_prior": Prior(
                "matrix" if matrix else "any",
                (cov[ct],) if known else None,
                "the inverse-Wishart prior's scale matrix"
                if matrix
                else "the inverse-gamma prior's shape",
            ),
            "covars_weight": Prior(
                "any" if matrix else "nonnegative",
                (weight[ct],) if known else None,
                "the inverse-Wishart prior's degrees of freedom"
                if matrix
                else "the inverse-gamma prior's scale",
            ),
        }

    def _shapes(self, d):
        k, m = self.n_components, self.n_mix
        cov = {"spherical": (k, m), "diag": (k, m, d), "full": (k, m, d, d), "tied": (k, d, d)}[
            self.covariance_type
        ]
        return {"weights": (k, m), "means": (k, m, d), "covars": cov}

    def _kept(self, name: str, d: int) -> torch.Tensor:
        """A parameter set by hand that fit keeps (its letter not in ``init_params``), checked
        for shape and finiteness before any E-step meets it."""
        value = self._tensor(getattr(self, f"{name}_"), f"{name}_")
        shape = self._shapes(d)[name]
        if tuple(value.shape) != shape:
            raise ParameterError(
                f"{name}_ must have shape {shape}, got {tuple(value.shape)}; set it with that "
                f"shape, or put its letter ({name[0]!r}) in init_params to let fit initialise it"
            )
        if not bool(torch.isfinite(value).all()):
            raise ParameterError(f"{name}_ must hold finite numbers")
        return value

    def _emission_params(self):
        out = {
            "weights": self._tensor(self.weights_),
            "means": self._tensor(self.means_),
            "covars": self._tensor(self.covars_),
        }
        for name, shape in self._shapes(
            getattr(self, "n_features", out["means"].shape[-1])
        ).items():
            if out[name].shape != shape:
                raise ParameterError(
                    f"{name}_ must have shape {shape}, got {tuple(out[name].shape)}"
                )
        check_distribution(out["weights"], "weights_")
        return out

    def _init_emissions(self, X, gen):
        k, m, d = self.n_components, self.n_mix, X.shape[1]
        # the parameters with their statistics and the M-step's copies (about six), and the
        # (rows, k, m) responsibilities with their log-densities: refused before any is made
        per = {"spherical": 1, "diag": d, "full": d * d, "tied": d * d / max(m, 1)}
        check_allocation(
            X.element_size() * 6 * k * m * (d + 1 + per[self.covariance_type] + X.shape[0]),
            f"GMMHMM with {k:,} states x n_mix={m:,} components of {d:,} features",
            device=X.device,
            hint="use fewer mixture components per state (n_mix)",
        )
        ones = torch.ones(X.shape[0], dtype=X.dtype, device=X.device)
        cv = _data_cov(X, self.min_covar)
        out = {}
        if self._needs_init("m", "means_"):
            centers, labels = kmeans(X, k, ones, gen)
            out["means"] = self._mixture_means(X, centers, labels, cv, gen)
        else:
            out["means"] = self._kept("means", d)
        if self._needs_init("w", "weights_"):
            out["weights"] = torch.full((k, m), 1.0 / m, dtype=X.dtype, device=X.device)
        else:
            out["weights"] = self._kept("weights", d)
            check_distribution(out["weights"], "weights_")
        if self._needs_init("c", "covars_"):
            if self.covariance_type in ("full", "tied"):  # positive definite in the dtype
                cv = _lift_lost(cv, X, self.min_covar)
            out["covars"] = {
                "spherical": cv.diagonal().mean().expand(k, m),
                "diag": cv.diagonal().expand(k, m, d),
                "full": cv.expand(k, m, d, d),
                "tied": cv.expand(k, d, d),
            }[self.covariance_type].clone()
        else:
            out["covars"] = cov = self._kept("covars", d)
            if self.covariance_type in ("full", "tied"):  # every (state, component) matrix
                _check_positive_definite(cov.reshape(-1, d, d), "full")
            else:  # variances
                _check_positive_definite(cov, "diag")
        # The fit's fixed centre and the means about it: in float32 the absolute means of data
        # far from the origin round to the spacing of the offset (1.0 at 1e7), the
        # differences keep their digits; densities and statistics are taken about the centre.
        out["shift"] = weighted_mean(X)
        out["delta"] = out["means"] - out["shift"]
        return out

    def _mixture_means(self, X, centers, assign, cv, gen) -> torch.Tensor:
        """Every state's ``n_mix`` component means (k, m, d): k-means of the rows ``assign``
        gives the state, or, with fewer rows than components, draws around the centroid."""
        k, m, d = self.n_components, self.n_mix, X.shape[1]
        ones = torch.ones(X.shape[0], dtype=X.dtype, device=X.device)
        means = []
        # the spread of the draws: a data covariance of rows far from the origin (entries of
        # 4e37 on two rows of three features) is singular once min_covar is lost in its
        # rounding; lifted as a singular update is, and refused by name if still singular
        chol, info = torch.linalg.cholesky_ex(_lift_singular(cv, "full", self.min_covar))
        if int(info):
            raise DegenerateComponentError(
                f"the data covariance ({d} features, largest variance "
                f"{float(cv.diagonal().max()):.3g}) is not positive definite even lifted "
                "by min_covar, so the mixture components cannot be spread around the data; "
                "rescale the data (or drop a constant column), or try a larger min_covar"
            )
        for s in range(k):
            Xs = X[assign == s]
            if Xs.shape[0] >= m:
                means.append(kmeans(Xs, m, ones[: Xs.shape[0]], gen)[0])
            else:  # too few points: spread the mixture around the centroid
                z = torch.randn(m, d, generator=gen, dtype=torch.float64, device=gen.device)
                means.append(centers.mean(0) + z.to(X) @ chol.T)
        return torch.stack(means)

    def _init_emissions_from_labels(self, params, X, labels, gen):
        """When ``init_params`` asks for means: the states' centres are the means of their
        labelled rows, every other row goes to the nearest centre (Constrained k-means of
        Basu, Banerjee & Mooney 2002, one assignment step: labelled rows stay with their
        state), and each state's component means are k-means of its rows as in the
        unlabelled start."""
        if not self._needs_init("m", "means_"):
            return {}
        resp = self._labelled_states(labels)  # (n, k)
        centers = (resp.T @ X) / resp.sum(0).unsqueeze(1)  # (k, d)
        assign = nearest_center(X, centers)  # (n,)
        known = labels >= 0
        assign[known] = labels[known]
        means = self._mixture_means(X, centers, assign, _data_cov(X, self.min_covar), gen)
        return {"means": means, "delta": means - params["shift"]}

    def _online_centre(self, params):
        """A fitted model's statistics for ``partial_fit`` are taken about its mean of the
        component means, fixed from then on (as ``fit`` fixes the data mean)."""
        shift = params["means"].reshape(-1, params["means"].shape[-1]).mean(0)
        return {**params, "shift": shift, "delta": params["means"] - shift}

    def _online_emission_stats(self, params, X, W):
        """Online statistics (see :mod:`latentfit.em.hmm.online`) about the component means
        μ_km of the parameters in force, as the batch E-step takes them (about a fixed
        centre c, a component far from it keeps no digit of its variance): ``n`` (k, m, e),
        ``s1`` = Σ w r (x − μ) (k, m, d, e), ``s2`` the second moments about μ, ``post``
        (k, e); :meth:`_online_moved` moves them to the means of each M-step."""
        Xc = X - params["shift"]  # (n, d)
        lp = E._mixture_log_prob(
            Xc,
            params["weights"],
            params["delta"],
            params["covars"],
            self.covariance_type,
            (X, params["means"]),
        )
        r = torch.softmax(lp, 2)  # (n, k, m) the component within each state
        cen = Xc[:, None, None, :] - params["delta"]  # (n, k, m, d) x − μ_km
        out = {
            "n": torch.einsum("tkm,tke->kme", r, W),
            "s1": torch.einsum("tkm,tke,tkmd->kmde", r, W, cen),
            "post": W.sum(0),
        }
        if self.covariance_type in ("full", "tied"):
            out["s2"] = torch.einsum("tkm,tke,tkmd,tkmf->kmdfe", r, W, cen, cen)
        else:
            out["s2"] = torch.einsum("tkm,tke,tkmd->kmde", r, W, cen * cen)
        return out

    def _online_moved(self, rho, old, new):
        """The running moments about the component means of ``old`` moved to those of
        ``new`` (:func:`~latentfit.em.online.translate_moment_stats`, every (state,
        component) its own centre): a step of the order of each component's spread."""
        delta = (old["delta"] - new["delta"]).flatten(0, 1)  # (k·m, d) μ(old) − μ(new)
        ct = "full" if self.covariance_type in ("full", "tied") else "diag"
        n, s1, s2 = rho["n"], rho["s1"], rho["s2"]
        moved = []
        for e in range(n.shape[-1]):
            one = {"S0": n[..., e].flatten(), "S1": s1[..., e].flatten(0, 1)}
            one["S2"] = s2[..., e].flatten(0, 1)
            moved.append(translate_moment_stats(one, delta, ct))
        return {
            **rho,
            "s1": torch.stack([m["S1"] for m in moved], -1).view_as(s1),
            "s2": torch.stack([m["S2"] for m in moved], -1).view_as(s2),
        }

    @staticmethod
    def _centred(params, X):
        """(X − c, μ − c, (X, μ)) during a fit (params with a shift), (X, μ, None) otherwise:
        the uncentred pair is for the components computed from x − μ (see
        :func:`~latentfit.em.hmm.emissions.gmm_log_likelihood`)."""
        if "shift" in params:
            return X - params["shift"], params["delta"], (X, params["means"])
        return X, params["means"], None

    def _emission_log_likelihood(self, params, X):
        Xc, mc, direct = self._centred(params, X)
        return E.gmm_log_likelihood(
            Xc, params["weights"], mc, params["covars"], self.covariance_type, direct
        )

    def _emission_stats(self, params, X, gamma):
        Xc, mc, direct = self._centred(params, X)
        w, cov = params["weights"], params["covars"]
        return E.gmm_stats(Xc, gamma, w, mc, cov, self.covariance_type, direct)

    def _emission_mstep(self, params, stats):
        dt = params["means"].dtype
        priors = self._priors(params["means"])
        st = {key: v.double() for key, v in stats.items()}
        shift = params["shift"].double() if "shift" in params else None
        means = params["means"].double() if shift is None else params["delta"].double()
        far = None
        if shift is not None:  # the prior mean about the centre, as the statistics
            mu0 = priors[1] - shift
            far = E.gmm_far(params["delta"], params["covars"], self.covariance_type)
            if bool(far.any()):
                # statistics about μ_km itself (gmm_stats): the update is kept absolute;
                # through μ_km − c it would round to the spacing of c (rows near 2.4 with
                # one row at 1e17 fitted a mean of 2.5: c is 1.7e15)
                means = torch.where(far.unsqueeze(2), params["means"].double(), means)
                mu0 = torch.where(far.unsqueeze(2), priors[1], mu0)
            priors = (priors[0], mu0, *priors[2:])
        w, mu, cov, empty = E.gmm_mstep(
            st,
            params["weights"].double(),
            means,
            params["covars"].double(),
            self.covariance_type,
            priors,
            "".join(c for c in "wmc" if c in self.params),
        )
        # positive definite in the model's dtype: the float64 update lifted by float64's
        # epsilon could still round to a singular float32 matrix (the loader then refused it)
        cov = _lift_singular(cov.to(dt), self.covariance_type, self.min_covar)
        new = {"weights": w.to(dt), "covars": cov}
        if shift is None:
            new["means"] = mu.to(dt)
        else:
            far = far.unsqueeze(2)  # (k, m, 1): mu is absolute there, about c elsewhere
            new["means"] = torch.where(far, mu, shift + mu).to(dt)
            new["delta"] = torch.where(far, mu - shift, mu).to(dt)
        # what the data give every component's covariance, for _find_degenerate
        new["scatter"] = E.gmm_scatter(st, mu - means, self.covariance_type)
        new["mix_post"] = st["n"]
        return new, empty

    def _find_degenerate(self, params) -> dict:
        """The (state, mixture component) pairs collapsed onto (near-)identical rows
        (:func:`~latentfit.em.hmm.emissions.gmm_degenerate`), against the floor the update
        adds to a variance: ``min_covar`` and the prior's scale (``covars_weight`` of diag
        and spherical, the diagonal of ``covars_prior`` of full and tied)."""
        if "scatter" not in params:
            return {}
        means = params.get("delta", params["means"]).double()
        return E.gmm_degenerate(
            params["scatter"],
            params["mix_post"],
            means,
            self.covariance_type,
            self._variance_floor(),
        )

    def _variance_floor(self) -> float:
        """``min_covar`` plus the most the covariance prior's scale adds to a variance."""
        psi, nu = self._priors(self._tensor(self.means_))[3:]
        if self.covariance_type in ("full", "tied"):
            added = psi.diagonal(dim1=-2, dim2=-1).max()
        else:
            added = 2 * nu.max()
        return self.min_covar + max(float(added), 0.0)

    def _degenerate_rows(self, found, X, lengths, y) -> dict:
        """The rows most responsible for each pair of ``found``: those whose posterior
        responsibility γ r for it is at least half its largest (components sharing one tied
        point share its rows)."""
        gamma = torch.as_tensor(self.predict_proba(X, lengths, y=y))  # (n, k)
        p = self._emission_params()
        lp = E._mixture_log_prob(
            self._tensor(X), p["weights"], p["means"], p["covars"], self.covariance_type
        )  # (n, k, m)
        resp = (gamma.to(lp).unsqueeze(2) * torch.softmax(lp, 2)).cpu().numpy()  # (n, k, m)
        return {
            (s, c): np.flatnonzero(resp[:, s, c] >= 0.5 * resp[:, s, c].max()).tolist()
            for s, c in found
        }

    def _describe_degenerate(self, found, rows) -> str:
        floor = "min_covar"
        if self._variance_floor() > self.min_covar:
            prior = "covars_prior" if self.covariance_type in ("full", "tied") else "covars_weight"
            floor = f"{prior}/min_covar"
        fewer = "fewer mixture components per state (n_mix) or states (n_components)"
        return describe_degenerate(
            type(self).__name__, found, rows, floor, ("state", "mixture component"), fewer
        )

    def _infer_n_features(self) -> None:
        """Parameters set by hand: the features are the last axis of ``means_`` (k, m, d), as
        hmmlearn takes them (``weights_``, the first emission attribute, ends in n_mix)."""
        if getattr(self, "n_features", None) is None:
            self.n_features = int(np.shape(self.means_)[-1])

    def _emission_log_prior(self, params):
        """The mixture weights' Dirichlet and the means' and covariances' normal-inverse-gamma
        / -Wishart priors (:func:`~latentfit.em.hmm.emissions.gmm_log_prior`) whose MAP the
        M-step computes, hmmlearn's defaults included (the spherical default is not flat).
        As GaussianHMM's, the M-step departs from that MAP only where it lifts a covariance
        that is singular in the model's dtype, a collapsing component."""
        total = 0.0
        if "w" in self.params:
            total = E.dirichlet_log_prior(params["weights"], self.weights_prior)
        if "m" in self.params or "c" in self.params:
            means = params["means"].double()
            total = total + E.gmm_log_prior(
                means, params["covars"].double(), self.covariance_type, self._priors(means)
            )
        return total

    def _priors(self, means):
        """The settings' priors in float64 for means of shape (k, m, d)
        (:func:`~latentfit.em.hmm.emissions.gmm_priors`)."""
        k, m, d = means.shape
        return E.gmm_priors(
            self.covariance_type,
            k,
            m,
            d,
            self.weights_prior,
            self.means_prior,
            self.means_weight,
            self.covars_prior,
            self.covars_weight,
            torch.float64,
            means.device,
        )

    def _set_emission_attributes(self, params):
        self.weights_ = params["weights"].cpu().numpy()
        self.means_ = params["means"].cpu().numpy()
        self.covars_ = params["covars"].cpu().numpy()
        self.n_features = self.means_.shape[2]

    def _emission_specs(self, k, d):
        """Mixture weights on the simplex (k, n_mix), finite means (k, n_mix, d) and the
        covariances of ``covariance_type`` (tied: one matrix per state)."""
        m = self.n_mix
        return {
            "weights_": Stored((k, m), "simplex"),
            "means_": Stored(None if d is None else (k, m, d)),
            "covars_": covariance_stored(self.covariance_type, k, d, per=(m,)),
        }

    def _set_state(self, tensors, extra):
        super()._set_state(tensors, extra)
        self.n_features = self.means_.shape[2]
        if hasattr(self, "degenerate_components_"):  # JSON's lists, the fit's pairs
            self.degenerate_components_ = [tuple(p) for p in self.degenerate_components_]

    def _emission_n_params(self):
        k, m, d = self.n_components, self.n_mix, self.n_features
        cov = {
            "spherical": k * m,
            "diag": k * m * d,
            "full": k * m * d * (d + 1) // 2,
            "tied": k * d * (d + 1) // 2,
        }[self.covariance_type]
        return {"m": k * m * d, "c": cov, "w": k * (m - 1)}

    def _sample_emissions(self, params, states, gen):
        w = params["weights"].double().cpu()
        means = params["means"].double().cpu()
        k, m, d = means.shape
        comp = torch.multinomial(w[states], 1, generator=gen).squeeze(1)  # (n,)
        cov = params["covars"].double().cpu()
        ct = self.covariance_type
        if ct == "tied":
            full = cov.unsqueeze(1).expand(k, m, d, d)
        elif ct == "full":
            full = cov
        elif ct == "diag":
            full = torch.diag_embed(cov)
        else:
            full = cov[..., None, None] * torch.eye(d, dtype=torch.float64)
        L = torch.linalg.cholesky(full.reshape(k * m, d, d))  # (k m, d, d)
        z = torch.randn(len(states), d, generator=gen, dtype=torch.float64)
        return E.gaussian_sample(means.reshape(k * m, d), L, states * m + comp, z)
