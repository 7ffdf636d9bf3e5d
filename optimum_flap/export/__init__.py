"""Export dense and pruned checkpoints to GGUF for llama.cpp, Ollama and LM Studio (see docs/serving.md)."""

from .tensors import GGUFExportError
from .writer import OUTTYPES, choose_architecture, to_gguf

__all__ = ["OUTTYPES", "GGUFExportError", "choose_architecture", "to_gguf"]
