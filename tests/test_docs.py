"""The README's Python blocks run as written.

They are executed in order in one namespace, as a reader would type them into one Python session from
the repository root. Only two things are substituted: the model (``smollm2_checkpoint()`` becomes a
tiny random Llama saved in ``tmp_path``, so the test takes seconds instead of minutes) and the ``out/``
directory (redirected into ``tmp_path``). The Hub upload is intercepted at huggingface_hub's two calls.
Everything else, data paths and named datasets included, is the README's text.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from eval_fixtures import char_tokenizer, tiny_llama

from optimum_flap.data_files import WIKITEXT2_TEST, ZEROSHOT_DIR, data_dir

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
MODEL_CALL = "smollm2_checkpoint()"


def python_blocks(markdown: str) -> list[str]:
    """The bodies of the ```python fenced blocks, in order."""
    return re.findall(r"^```python\n(.*?)^```", markdown, flags=re.DOTALL | re.MULTILINE)


def test_readme_has_the_blocks_this_test_substitutes():
    blocks = python_blocks(README.read_text(encoding="utf-8"))
    assert len(blocks) >= 4
    assert sum(MODEL_CALL in b for b in blocks) == 1
    assert "/tmp" not in "".join(blocks)


@pytest.fixture
def tiny_model_dir(tmp_path: Path) -> Path:
    """A tiny random Llama and a character tokenizer that covers the shared English text."""
    tokenizer = char_tokenizer()
    model = tiny_llama(len(tokenizer))
    path = tmp_path / "tiny-llama"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.mark.skipif(not (data_dir() / WIKITEXT2_TEST).is_file() or not (data_dir() / ZEROSHOT_DIR).is_dir(),
                    reason="the README's blocks read the shared data beside the repository")
def test_readme_python_blocks_run_as_written(tiny_model_dir, tmp_path, monkeypatch):
    import optimum_flap.checkpoint.hub as hub

    pushed: list[tuple[str, list[str]]] = []
    monkeypatch.setattr(hub, "create_repo", lambda repo_id, **kwargs: None)
    monkeypatch.setattr(hub, "upload_folder", lambda repo_id, folder_path, **kwargs: pushed.append(
        (repo_id, sorted(p.name for p in Path(folder_path).iterdir()))))
    monkeypatch.chdir(REPO)  # the README's relative data paths are relative to the repository root
    torch.manual_seed(0)

    namespace: dict = {"__name__": "__readme__"}
    out = tmp_path / "out"
    for index, block in enumerate(python_blocks(README.read_text(encoding="utf-8"))):
        code = block.replace(MODEL_CALL, repr(str(tiny_model_dir))).replace('"out/', f'"{out}/')
        exec(compile(code, f"README.md python block {index + 1}", "exec"), namespace)

    for name in ("smollm2-flap-20-api", "smollm2-flap-20-memory"):
        assert (out / name / "config.json").is_file() and (out / name / "tokenizer.json").is_file()
    report = namespace["pruner"].report
    assert report.achieved_ratio == pytest.approx(0.2, abs=0.05)
    assert report.parameters_after < report.parameters_before
    assert pushed and pushed[0][0] == "me/smollm2-flap-20" and "config.json" in pushed[0][1]


@pytest.mark.parametrize("doc", ["docs/cfsp.md", "docs/checkpoint-format.md", "docs/barber.md", "docs/minitron.md"])
def test_docs_python_blocks_run_as_written(doc, tiny_model_dir, tmp_path, monkeypatch):
    """The same substitutions as for the README; the loading guide reads command 1's output directory."""
    from optimum_flap import FlapConfig, FlapPruner

    monkeypatch.chdir(REPO)
    out = tmp_path / "out"
    if "checkpoint-format" in doc:  # stands in for the README's command 1
        config = FlapConfig(pruning_ratio=0.2, dataset="c4", num_samples=8, seq_len=32)
        FlapPruner.from_pretrained(str(tiny_model_dir), config=config).prune(save_directory=out / "smollm2-flap-20")
    namespace: dict = {"__name__": "__docs__"}
    blocks = python_blocks((REPO / doc).read_text(encoding="utf-8"))
    assert blocks
    for index, block in enumerate(blocks):
        code = block.replace(MODEL_CALL, repr(str(tiny_model_dir))).replace('"out/', f'"{out}/')
        exec(compile(code, f"{doc} python block {index + 1}", "exec"), namespace)
    model = namespace["model"] if "model" in namespace else namespace["pruner"].model
    assert model.config.num_hidden_layers == 2
