"""Normalizing flows: one flow-layer library and density models trained by exact maximum
likelihood (MAF, Real NVP, neural-spline coupling), for tabular data and 8-bit images."""

from latentfit.flows.density import MAF, FlowDensity, NeuralSplineFlow, RealNVP
from latentfit.flows.layers import (
    AffineCoupling,
    IAFStep,
    LayerTransform,
    MaskedAffine,
    PlanarStep,
    SplineCoupling,
    flow_forward,
    flow_inverse,
)
from latentfit.flows.objectives import FlowNLL, dequantize, logit_transform

__all__ = [
    "MAF",
    "AffineCoupling",
    "FlowDensity",
    "FlowNLL",
    "IAFStep",
    "LayerTransform",
    "MaskedAffine",
    "NeuralSplineFlow",
    "PlanarStep",
    "RealNVP",
    "SplineCoupling",
    "dequantize",
    "flow_forward",
    "flow_inverse",
    "logit_transform",
]
