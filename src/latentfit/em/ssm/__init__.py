"""Linear-Gaussian state-space models: Kalman filter, RTS smoother and EM."""

from latentfit.em.ssm.model import LinearGaussianSSM

__all__ = ["LinearGaussianSSM"]
