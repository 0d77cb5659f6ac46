"""Mixture models fitted by EM: Gaussian (gmm), the shared mixture base (base), Bernoulli /
Poisson / multinomial / categorical mixtures (discrete), one-family mixtures (families) and
the conjugate priors of MAP-EM (priors)."""
