"""The package's import arrows point one way, and the heavy libraries stay where they belong.

Flow: entry points -> sweep -> job -> generate / scoring / tracking / demo -> pixelart, config;
entry points -> analysis -> tracking, pixelart, config.
A module may import only the stages listed for its own stage below.
"""

from __future__ import annotations

import ast

from tests.helpers import PACKAGE

ALLOWED: dict[str, set[str]] = {
    "config": {"config", "pixelart"},  # the art's size (pixelart.CELLS), the one constant it takes
    "interrupts": set(),
    "pixelart": {"pixelart"},
    "scoring": {"scoring", "pixelart"},
    "generate": {"generate", "interrupts", "config"},
    "tracking": {"tracking", "interrupts"},
    "demo": {"demo", "config", "pixelart", "generate"},
    "job": {"job", "config", "interrupts", "pixelart", "scoring", "generate", "tracking", "demo"},
    # Not analysis: the end-of-sweep analysis is named in the config (hydra.callbacks.mlflow_sweep.analyse).
    "sweep": {"sweep", "config", "interrupts", "job", "generate", "tracking"},
    "analysis": {"analysis", "config", "tracking", "pixelart", "generate", "scoring.registry"},
}
ENTRY_POINTS = {
    "__main__",
    "rank",
    "rescore",
    "retrain",
    "confirm",
    "checkpoints",
    "__init__",
}  # may import anything
ONLY_IN = {
    "mlflow": {"tracking.store"},
    "tensorboard": {"analysis.training_log"},  # the trainer's logs, read with TensorBoard's own parser
    "diffusers": {
        "generate.pipeline",
        "generate.schedulers",
        "demo.tiny_pipeline",
        "demo.training",
        "demo.base_training",
    },
}


def _modules() -> dict[str, list[str]]:
    """'stage.module' -> the bespoke_exp modules and third-party top-level names it imports."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        imports = []
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                base = node.module
                names = [f"{base}.{a.name}" for a in node.names] if base == "bespoke_exp" else [base]
                imports += names
            elif isinstance(node, ast.Import):
                imports += [a.name for a in node.names]
        found[name] = imports
    return found


def test_imports_flow_one_way() -> None:
    wrong = []
    for module, imports in _modules().items():
        stage = module.split(".")[0]
        if stage in ENTRY_POINTS:
            continue
        for target in imports:
            if not target.startswith("bespoke_exp."):
                continue
            target = target.removeprefix("bespoke_exp.")
            if not any(target == a or target.startswith(a + ".") for a in ALLOWED[stage]):
                wrong.append(f"{module} imports {target}")
    assert wrong == []


def test_mlflow_and_diffusers_are_imported_in_one_place_each() -> None:
    for library, homes in ONLY_IN.items():
        importers = {
            m for m, imports in _modules().items() if any(i.split(".")[0] == library for i in imports)
        }
        assert importers <= homes, f"{library} imported by {sorted(importers - homes)}"
        assert importers, f"nothing imports {library}: is this check still looking at the right package?"
