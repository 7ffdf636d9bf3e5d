"""LLM-Barber (Su et al., arXiv 2408.10631): block-aware rebuild of a Wanda, SparseGPT or magnitude mask.

Importing this package registers the method and imports no torch.
"""

from ..registry import register_method
from .config import BarberOptions

register_method("barber", BarberOptions, "optimum_flap.methods.barber.method:BarberMethod",
                "LLM-Barber: rebuild an initial sparse mask by |W| x RMS of the block-error gradient")
