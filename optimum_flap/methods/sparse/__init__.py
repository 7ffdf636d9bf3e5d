"""Unstructured and N:M sparsity: magnitude, Wanda (Sun et al. 2023) and SparseGPT (Frantar & Alistarh 2023).

One method class serves the three names; the numerics live in `optimum_flap.methods.sparsity`.
Importing this package registers the methods and imports no torch.
"""

from ..registry import register_method
from .config import SparseGPTOptions, SparsityOptions

_IMPLEMENTATION = "optimum_flap.methods.sparse.method:SparseMaskMethod"

register_method("magnitude", SparsityOptions, _IMPLEMENTATION, "zero the smallest |W| of each matrix (no data)")
register_method("wanda", SparsityOptions, _IMPLEMENTATION, "zero the lowest |W| x ||x|| of each output row")
register_method("sparsegpt", SparseGPTOptions, _IMPLEMENTATION,
                "optimal-brain-surgeon column sweep with weight reconstruction")
