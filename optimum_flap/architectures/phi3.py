"""Phi-3: fused projections, `qkv_proj` = [q | k | v] rows and `gate_up_proj` = [gate | up] rows.

The surgery and the accounting handle it; it is not registered in `ARCHITECTURES` because pruned
Phi-3 checkpoints (a per-layer model class) and calibration on it are not supported yet.
"""

from .spec import DecoderArchitecture

PHI3 = DecoderArchitecture(
    model_type="phi3",
    query="qkv_proj",
    key="qkv_proj",
    value="qkv_proj",
    gate="gate_up_proj",
    up="gate_up_proj",
)
