"""The ``latentfit`` command line. Each module imported here registers its commands."""

from latentfit.cli import estimate, gmm, hmm, select, tour, vae, vi  # noqa: F401  (registration)
from latentfit.cli.app import app


def main() -> None:
    app()


__all__ = ["app", "main"]
