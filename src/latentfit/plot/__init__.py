"""Plots of fitted models, in the manner of ArviZ and seaborn.

Every function takes a fitted model or result (and, where it helps, the data) and returns the
matplotlib Axes it drew on: pass ``ax=`` to draw into a figure of your own, or leave it out and
one is made with ``matplotlib.pyplot.subplots``. Nothing here chooses or changes matplotlib's
backend: figures show inline in Jupyter and in whatever backend the user has set.

============================  ====================================================================
:func:`plot_mixture`          Gaussian components as 1σ/2σ ellipses or density contours, over data
:func:`plot_convergence`      the EM / CAVI bound at every iteration of every restart; a training
                              run's bound per epoch
:func:`plot_selection`        a criterion (BIC, AIC, ICL, held-out) over K from ``select_model``
:func:`plot_states`           an HMM's decoded states over a series
:func:`plot_image_grid`       images (rows of a matrix) tiled into one picture
:func:`plot_samples`          a VAE's decoded samples from the prior
:func:`plot_reconstructions`  data rows above their VAE reconstructions
:func:`plot_trace`            posterior draws per chain: density and trace of each parameter
:func:`plot_pair`             posterior draws of parameters against each other
============================  ====================================================================
"""

from latentfit.plot.convergence import plot_convergence
from latentfit.plot.images import plot_image_grid, plot_reconstructions, plot_samples
from latentfit.plot.mixture import gaussian_components, plot_mixture
from latentfit.plot.posterior import plot_pair, plot_trace
from latentfit.plot.selection import plot_selection
from latentfit.plot.states import plot_states

__all__ = [
    "gaussian_components",
    "plot_convergence",
    "plot_image_grid",
    "plot_mixture",
    "plot_pair",
    "plot_reconstructions",
    "plot_samples",
    "plot_selection",
    "plot_states",
    "plot_trace",
]
