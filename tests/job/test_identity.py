"""Two identities: images are reused when only the scoring changed, scores are recomputed
when the scoring changed, and everything is redone when the generation changed. The scoring
code counts as code: a comment, docstring or formatting edit keeps its hash, a statement does not."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from bespoke_exp.config import compose_config
from bespoke_exp.job import identity
from bespoke_exp.job.identity import SCORING_CODE, TAG_GENERATION, TAG_SCORING, code_hash, scoring_code_hash
from bespoke_exp.job.run import run_job
from tests.helpers import PACKAGE


def _run(cfg, run_id):
    return MlflowClient(cfg.tracking.uri).get_run(run_id)


def test_a_new_metric_weight_rescores_the_same_images_without_generating(small_cfg, tmp_path) -> None:
    first = run_job(small_cfg, output_dir=tmp_path / "a")
    small_cfg.metrics.weights["grid/r2"] = 0.9
    second = run_job(small_cfg, output_dir=tmp_path / "b")
    assert second.status == "FINISHED" and second.run_id != first.run_id
    old, new = _run(small_cfg, first.run_id), _run(small_cfg, second.run_id)
    assert new.data.tags["images_from"] == first.run_id
    assert new.data.tags[TAG_GENERATION] == old.data.tags[TAG_GENERATION]
    assert new.data.tags[TAG_SCORING] != old.data.tags[TAG_SCORING]
    assert "time/generate_s" in old.data.metrics and "time/generate_s" not in new.data.metrics
    assert new.data.metrics["score"] != old.data.metrics["score"]
    for image in (tmp_path / "a" / "images").glob("*.png"):
        assert (tmp_path / "b" / "images" / image.name).read_bytes() == image.read_bytes()
    # The same scoring again: nothing to redo.
    assert run_job(small_cfg, output_dir=tmp_path / "c").status == "SKIPPED"


def test_a_generation_change_generates_again(small_cfg, tmp_path) -> None:
    first = run_job(small_cfg, output_dir=tmp_path / "a")
    small_cfg.sampler.steps = 3
    second = run_job(small_cfg, output_dir=tmp_path / "b")
    new = _run(small_cfg, second.run_id)
    assert "images_from" not in new.data.tags and "time/generate_s" in new.data.metrics
    assert new.data.tags[TAG_GENERATION] != _run(small_cfg, first.run_id).data.tags[TAG_GENERATION]


# --- the scoring code, read as code -------------------------------------------------------

CHECKS = '''"""Checks of a scored picture."""

LIMIT = 0.3  # the pass mark


def passes(value: float) -> bool:
    """Whether `value` clears the mark."""
    return value >= LIMIT


class Check:
    """One check."""

    name = "limit"
'''
PACKAGES = ("scoring", "pixelart")  # the packages hashed; `analysis` is not one of them


@pytest.fixture()
def tree(tmp_path) -> Path:
    """A small package tree: two hashed packages (one with a subpackage) and one that is not."""
    files = {
        "scoring/__init__.py": '"""Scoring."""\n',
        "scoring/checks.py": CHECKS,
        "scoring/rules/__init__.py": "",
        "scoring/rules/width.py": "WIDTH = 3\n",
        "pixelart/colors.py": "NAMES = ['red', 'blue']\n",
        "analysis/report.py": "SHOWN = 1\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


def _edit(root: Path, name: str, old: str, new: str) -> None:
    path = root / name
    assert old in path.read_text(), (name, old)
    path.write_text(path.read_text().replace(old, new))


@pytest.mark.parametrize(
    ("name", "old", "new"),
    [
        ("scoring/checks.py", "# the pass mark", "# raised after review\n# (see the calibration notes)"),
        ("scoring/checks.py", '"""Checks of a scored picture."""', '"""Checks, rewritten docs."""'),
        ("scoring/checks.py", '"""Whether `value` clears the mark."""', '"""True at or above LIMIT."""'),
        ("scoring/checks.py", '    """One check."""\n\n', ""),  # a docstring dropped
        ("scoring/checks.py", "return value >= LIMIT", "return (\n        value >= LIMIT\n    )"),
        ("scoring/checks.py", 'name = "limit"', "name = 'limit'"),
        ("scoring/__init__.py", '"""Scoring."""', '"""Scoring: the metrics and checks."""'),
        ("pixelart/colors.py", "NAMES = ['red', 'blue']", "NAMES = [\n    'red',\n    'blue',\n]  # two"),
    ],
)
def test_comments_docstrings_and_formatting_keep_the_code_hash(tree, name, old, new) -> None:
    before = code_hash(tree, PACKAGES)
    _edit(tree, name, old, new)
    assert code_hash(tree, PACKAGES) == before


@pytest.mark.parametrize(
    ("name", "old", "new"),
    [
        ("scoring/checks.py", "LIMIT = 0.3", "LIMIT = 0.31"),
        ("scoring/checks.py", "value >= LIMIT", "value > LIMIT"),
        ("scoring/checks.py", 'name = "limit"', 'name = "limits"'),  # a string that is no docstring
        ("scoring/rules/width.py", "WIDTH = 3", "WIDTH = 4"),  # a subpackage, its first statement
        ("pixelart/colors.py", "'blue'", "'green'"),
    ],
)
def test_a_changed_statement_changes_the_code_hash(tree, name, old, new) -> None:
    before = code_hash(tree, PACKAGES)
    _edit(tree, name, old, new)
    assert code_hash(tree, PACKAGES) != before


def test_an_added_or_renamed_module_changes_the_code_hash(tree) -> None:
    before = code_hash(tree, PACKAGES)
    (tree / "scoring" / "extra.py").write_text("EXTRA = 1\n")
    added = code_hash(tree, PACKAGES)
    # The same code under another name: code is imported by its module's name.
    (tree / "scoring" / "extra.py").rename(tree / "scoring" / "extra_rules.py")
    assert len({before, added, code_hash(tree, PACKAGES)}) == 3


def test_code_outside_the_named_packages_does_not_count(tree) -> None:
    before = code_hash(tree, PACKAGES)
    _edit(tree, "analysis/report.py", "SHOWN = 1", "SHOWN = 2")
    (tree / "elsewhere.py").write_text("X = 1\n")
    assert code_hash(tree, PACKAGES) == before


@pytest.mark.parametrize("edited", ["scoring/fidelity.py", "pixelart/grid.py"])
def test_the_scoring_code_is_the_metrics_and_the_grid_recovery(tmp_path, edited) -> None:
    """On a copy of the real scoring code: a comment on every file keeps its hash, a statement
    added to the metrics or to the grid recovery (which decides every cell a metric reads) not."""
    for package in ("scoring", "pixelart"):
        shutil.copytree(PACKAGE / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    assert code_hash(tmp_path, SCORING_CODE) == scoring_code_hash()  # the installed code's hash
    for path in tmp_path.rglob("*.py"):
        path.write_text(f"# reviewed\n{path.read_text()}")
    assert code_hash(tmp_path, SCORING_CODE) == scoring_code_hash()
    module = tmp_path / edited
    module.write_text(f"{module.read_text()}\n_TUNED = 4.0\n")
    assert code_hash(tmp_path, SCORING_CODE) != scoring_code_hash()


def test_a_change_to_the_scoring_code_changes_the_scoring_identity(monkeypatch) -> None:
    cfg = compose_config([])
    palette = np.array([[0, 0, 0], [255, 255, 255]], np.uint8)
    before = identity.scoring_identity(cfg, palette, None)
    monkeypatch.setattr(identity, "scoring_code_hash", lambda: "0" * 16)  # as if the code were edited
    assert identity.scoring_identity(cfg, palette, None) != before
