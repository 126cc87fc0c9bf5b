"""The champion: the recommended LoRA file registered as a model version, and the
`@champion` alias moved to it when it beats the version holding it."""

from __future__ import annotations

from pathlib import Path

from bespoke_exp import tracking
from bespoke_exp.analysis.load import Sweep
from bespoke_exp.analysis.recommendation import Recommendation
from bespoke_exp.generate.checkpoints import file_sha256

CHAMPION_DIR = "champion"  # the parent run's copy of the recommended LoRA file
ALIAS = "champion"


def register_champion(sweep: Sweep, rec: Recommendation, name: str) -> str | None:
    """Log the recommended LoRA file to the parent run and register it as a version of `name`."""
    best = rec.best
    checkpoint = Path(str(best["checkpoint"]))
    if not checkpoint.is_file():
        print(f"[bespoke_exp] not registering a champion: {checkpoint} is not on this machine")
        return None
    row = sweep.runs.loc[sweep.runs["run_id"] == best["run_id"]].iloc[0]
    if file_sha256(checkpoint) != row["checkpoint_sha256"]:
        print(
            f"[bespoke_exp] not registering a champion: {checkpoint} changed since run {best['run_id']} "
            f"evaluated it (sha256 differs from its checkpoint_sha256 tag)"
        )
        return None
    tracking.log_artifact(sweep.tracker, sweep.parent_run_id, checkpoint, CHAMPION_DIR)
    score = float(best["mean"])
    version = tracking.register_model_version(
        sweep.tracker,
        name,
        run_id=sweep.parent_run_id,
        artifact_path=CHAMPION_DIR,  # a folder: models:/ downloads list folders, not single files
        tags={
            "epoch": str(best["epoch"]),
            "guidance": f"{best['guidance']:g}",
            "job_run_id": str(best["run_id"]),
            "sweep_id": sweep.sweep_id,
            "checkpoint_sha256": str(row["checkpoint_sha256"]),
            "diagnosis": rec.diagnosis.code,
            "score": f"{score:.6f}",
        },
    )
    moved = move_alias_if_better(sweep.tracker, name, version, score)
    where = "now holds" if moved else "stays with a higher-scoring version; registered without"
    print(
        f"[bespoke_exp] {name} version {version} ({checkpoint.name}) {where} alias @{ALIAS}: "
        f"models:/{name}@{ALIAS}"
    )
    return version


def move_alias_if_better(
    tracker: tracking.Tracker, name: str, version: str, score: float, alias: str = ALIAS
) -> bool:
    """Give `alias` to `version` unless the version holding it scored higher. Every version
    stays in the registry, so the history of recommendations is kept."""
    holder = tracking.alias_holder(tracker, name, alias)
    if holder is not None and float(holder[1].get("score", "-inf")) > score:
        return False
    tracking.set_alias(tracker, name, alias, version)
    return True
