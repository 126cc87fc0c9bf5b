"""Where the demo is built when nothing says where."""

from __future__ import annotations

from bespoke_exp.config import DEMO_RECIPE, default_demo_dir


def test_an_empty_xdg_cache_home_means_the_usual_cache_not_the_working_folder(tmp_path, monkeypatch) -> None:
    # The XDG spec: an empty value counts as unset. Read as "", the demo would be built
    # into whatever folder the command happened to run from.
    monkeypatch.delenv("BESPOKE_EXP_DEMO_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_demo_dir() == (tmp_path / ".cache" / "bespoke_exp" / f"demo-{DEMO_RECIPE}").resolve()
