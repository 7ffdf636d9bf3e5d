"""Where the data lives, for calibration, recovery and evaluation alike.

The project never ships data: it reads the shared, checksummed copies under ``../shared/data``
(relative to the working directory) or a directory named by the environment variable
``OPTIMUM_FLAP_DATA_DIR``. Keeping that lookup in one place means pruning, recovery, perplexity, the
zero-shot tasks and the tests all agree on which files they read.

The named datasets follow one rule everywhere: ``"wikitext2"`` and ``"c4"`` mean the local file under
the data root when it exists, and the Hugging Face Hub dataset only when it does not. Calibration and
recovery read WikiText-2's validation split (`WIKITEXT2_CALIBRATION`; never the test split that
perplexity scores) and the C4 sample (`C4_SAMPLE`); perplexity reads WikiText-2's test split
(`WIKITEXT2_TEST`).
"""

from __future__ import annotations

import os
from pathlib import Path

#: environment variable that overrides the data root
DATA_DIR_ENV = "OPTIMUM_FLAP_DATA_DIR"
#: default data root, relative to the current working directory (the repository root in CI)
DEFAULT_DATA_DIR = Path("..") / "shared" / "data"

#: file of the WikiText-2 raw test split, relative to the data root
WIKITEXT2_TEST = Path("wikitext2") / "wiki.test.raw"
#: WikiText-2 text that calibration and recovery read for ``"wikitext2"``, relative to the data root
WIKITEXT2_CALIBRATION = Path("wikitext2") / "wiki.valid.tokens"
#: C4 documents that calibration and recovery read for ``"c4"``, relative to the data root
C4_SAMPLE = Path("c4") / "sample_c4-rp1.jsonl"
#: the local file each named calibration dataset stands for, relative to the data root
NAMED_CALIBRATION_FILES = {"wikitext2": WIKITEXT2_CALIBRATION, "c4": C4_SAMPLE}
#: directory of the zero-shot task files, relative to the data root
ZEROSHOT_DIR = Path("zeroshot")


def data_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Return the data root: ``explicit`` if given, else ``$OPTIMUM_FLAP_DATA_DIR``, else ``../shared/data``.

    The path is not required to exist; callers decide whether a missing file is an error or a
    reason to fall back to the Hub.
    """
    if explicit is not None:
        return Path(explicit).expanduser()
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return DEFAULT_DATA_DIR


def zeroshot_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Return the directory holding one sub-directory per zero-shot task.

    ``explicit`` may be the data root (containing ``zeroshot/``) or the ``zeroshot`` directory
    itself, so both ``data_dir="../shared/data"`` and ``data_dir="../shared/data/zeroshot"`` work.
    """
    if explicit is not None:
        root = Path(explicit).expanduser()
        return root / ZEROSHOT_DIR if (root / ZEROSHOT_DIR).is_dir() else root
    return data_dir() / ZEROSHOT_DIR
