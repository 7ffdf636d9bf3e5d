"""FLAP (An et al., AAAI 2024) and the structured baselines wanda-sp and magnitude-sp."""

from ..registry import register_method
from .config import FlapOptions, StructuredBaselineOptions

_IMPLEMENTATION = "optimum_flap.methods.flap.method:FlapFamilyMethod"

register_method("flap", FlapOptions, _IMPLEMENTATION, "FLAP: fluctuation metric, adaptive structure, bias compensation")
register_method("wanda-sp", StructuredBaselineOptions, _IMPLEMENTATION, "baseline: |W| x ||x|| column score")
register_method("magnitude-sp", StructuredBaselineOptions, _IMPLEMENTATION, "baseline: weight column norm (no data)")
