"""The ``latentfit`` command line. Each module imported here registers its commands."""

from latentfit.cli import (  # noqa: F401  (registration)
    diffusion,
    estimate,
    flows,
    gmm,
    hmm,
    kernels,
    mixtures,
    models,
    select,
    sequences,
    ssm,
    tour,
    vae,
    vi,
)
from latentfit.cli.app import app


def main() -> None:
    app()


__all__ = ["app", "main"]
