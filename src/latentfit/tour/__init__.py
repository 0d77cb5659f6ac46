"""The tour: one report that walks the chain MLE → MAP → ELBO → EM → VI → VAE on bundled data.

Each section is a module of this package with ``build(ctx: TourContext) -> Section``; SECTIONS
lists them in the order of the chain.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import tempfile
import time
from pathlib import Path

from latentfit._files import _TMP_SUFFIX, _clean_stale, _fsync, _tmp_prefix, write_target
from latentfit.errors import ParameterError
from latentfit.tour.report import Section, TourContext, write_report

__all__ = ["FIGURES", "SECTIONS", "Section", "TourContext", "run_tour"]

# (name, module) in the order of the chain.
SECTIONS: list[tuple[str, str]] = [
    ("estimate", "latentfit.tour.estimate"),
    ("gmm", "latentfit.tour.gmm"),
    ("mixtures", "latentfit.tour.mixtures"),
    ("hmm", "latentfit.tour.hmm"),
    ("sequences", "latentfit.tour.sequences"),
    ("mcmc", "latentfit.tour.mcmc"),
    ("vi", "latentfit.tour.vi"),
    ("vae", "latentfit.tour.vae"),
    ("density", "latentfit.tour.density"),
]
#: The figures each section writes into the report folder: ``latentfit tour`` refuses a folder
#: that holds any of them (or index.html) without --force, before any work.
FIGURES: dict[str, tuple[str, ...]] = {
    "estimate": ("estimate_mle.png", "estimate_map.png", "estimate_conjugate.png"),
    "gmm": ("gmm_faithful.png", "gmm_history.png"),
    "mixtures": ("mixtures_bernoulli_means.png", "mixtures_ppca_latent.png", "mixtures_bic.png"),
    "hmm": ("hmm_geyser_states.png",),
    "sequences": ("hsmm_geyser_durations.png", "ssm_tracking.png"),
    "mcmc": ("mcmc_trace.png", "mcmc_pairs.png"),
    "vi": ("vi_em_gap.png", "vi_cavi_gap.png", "vi_dp_faithful.png"),
    "vae": ("vae_samples.png", "vae_kl.png"),
    "density": ("density_samples.png",),
}


def run_tour(
    out, sections: list[str] | None = None, seed: int = 0, echo=print, publish=None
) -> Path:
    """Build the chosen sections (all by default) and write ``out/index.html``. ``publish``:
    a context manager that the figures and the index are written in once every section is
    built (the command line's checks the folder again and puts an old report back if a write
    fails)."""
    out = Path(out)
    write_target(out).mkdir(parents=True, exist_ok=True)  # through a dangling link too
    known = dict(SECTIONS)
    chosen = sections or [name for name, _ in SECTIONS]
    unknown = [s for s in chosen if s not in known]
    if unknown:
        raise ParameterError(f"unknown tour section(s) {unknown}; choose from {list(known)}")
    # The sections save their figures into a hidden folder inside ``out``, moved into place
    # only once every section is built: a failure or Ctrl-C midway leaves an old report (its
    # index.html and figures) as it was, and no partial figures behind.
    _clean_stale(out, "tour")
    stage = Path(tempfile.mkdtemp(prefix=_tmp_prefix("tour"), suffix=_TMP_SUFFIX, dir=out))
    try:
        ctx = TourContext(out=stage, seed=seed, report=out)
        built: list[Section] = []
        for name in chosen:
            start = time.perf_counter()
            echo(f"tour: {name} ...")
            section = importlib.import_module(known[name]).build(ctx)
            section.seconds = time.perf_counter() - start
            built.append(section)
        with publish or contextlib.nullcontext():
            for entry in sorted(os.listdir(stage)):
                os.replace(stage / entry, out / entry)
            _fsync(out, directory=True)
            index = write_report(out, built)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return index
