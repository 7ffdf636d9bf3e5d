"""The start of a child script that must run without optimum_flap, as on a machine without the package.

Run it with `python -I` (no cwd or PYTHONPATH on sys.path): a meta-path finder then refuses
`optimum_flap` (the venv's editable install would otherwise find it), and the script stops if the
package can still be imported, so only torch and transformers can load the checkpoint.
"""

WITHOUT_OPTIMUM_FLAP = r"""
import importlib.abc, json, sys

class BlockOptimumFlap(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "optimum_flap":
            raise ImportError("optimum_flap is not importable in this test")

sys.meta_path.insert(0, BlockOptimumFlap())
try:
    import optimum_flap  # noqa: F401
    raise SystemExit("optimum_flap should not be importable here")
except ImportError:
    pass
"""
