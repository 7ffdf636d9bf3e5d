"""Minitron-style stock-shaped pruning: uniform hidden size, heads, MLP width and depth by activation importance."""

from ..registry import register_method
from .config import MinitronOptions

register_method("minitron", MinitronOptions, "optimum_flap.methods.minitron.method:MinitronMethod",
                "Minitron: uniform width/depth by activation importance, searched shape, stock config")
