"""The champion: the recommended LoRA file registered as a model version, and the
`@champion` alias moved to it when it beats the version holding it. A version from a sweep whose
verdict is `poor_overall` (no combination good enough) is registered but never takes the alias.

Scores are only compared between comparable versions: the same prompt set, the same scoring
identity and the same ranked metric, as recorded in each version's tags (IDENTITY_KEYS).
A version that is not comparable with the holder is registered without taking the alias, and
the reason is printed; "better" follows the ranked metric's direction in the metrics registry.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from bespoke_exp import tracking
from bespoke_exp.analysis.load import Sweep
from bespoke_exp.analysis.recommendation import Recommendation
from bespoke_exp.generate.digests import file_sha256
from bespoke_exp.scoring.registry import metric_spec

CHAMPION_DIR = "champion"  # the parent run's copy of the recommended LoRA file
ALIAS = "champion"
# Tags that must match for two versions' scores to mean the same thing. A key missing on both
# sides matches (versions registered before it was recorded); missing on one side does not.
IDENTITY_KEYS = ("prompt_set", "scoring_identity", "ranked_metric", "ranked_prompts")
DEFAULT_METRIC = "score"  # what versions without a ranked_metric tag were ranked by


def identity_tags(sweep: Sweep, rec: Recommendation) -> dict[str, str]:
    """The comparability tags of a sweep's champion; prompt_set and scoring_identity come from the
    sweep when it records them (older Sweep objects lack the attributes)."""
    tags = {"ranked_metric": rec.metric, "ranked_prompts": rec.ranked_prompts}
    for key in ("prompt_set", "scoring_identity"):
        value = getattr(sweep, key, None)
        if value is not None:
            tags[key] = str(value)
    return tags


def _score(tags: Mapping[str, str]) -> float | None:
    try:
        return float(tags["score"])
    except (KeyError, ValueError):
        return None


def champion_decision(
    holder: tuple[str, Mapping[str, str]] | None, tags: Mapping[str, str], score: float
) -> tuple[bool, str]:
    """(move the alias?, why) for a new version with `tags` and `score` against the `holder`
    (version, tags) of the alias, or None when no version holds it."""
    if tags.get("diagnosis") == "poor_overall":
        return False, (
            "the sweep's verdict is poor_overall: no combination it tried is good enough, so none of "
            "its versions may become the champion"
        )
    if holder is None:
        return True, "no version held the alias"
    version, old = holder
    differ = [k for k in IDENTITY_KEYS if old.get(k) != tags.get(k)]
    if differ:
        what = "; ".join(f"{k} {old.get(k)!r} there, {tags.get(k)!r} here" for k in differ)
        return False, f"version {version} holding it is not comparable ({what}), so scores cannot be ranked"
    metric = tags.get("ranked_metric", DEFAULT_METRIC)
    try:
        higher = metric_spec(metric).higher_is_better
    except KeyError:
        return False, f"ranked metric {metric!r} is not in the metrics registry, so its direction is unknown"
    held = _score(old)
    if held is None:
        return True, f"version {version} holding it has no score"
    better = score >= held if higher else score <= held  # ties go to the newer recommendation
    word = "higher" if higher else "lower"
    if better:
        return (
            True,
            f"{metric} {score:.4f} is no worse than version {version}'s {held:.4f} ({word} is better)",
        )
    return (
        False,
        f"version {version} holding it scored better: {metric} {held:.4f} vs {score:.4f} ({word} is better)",
    )


def move_alias(
    tracker: tracking.Tracker, name: str, version: str, score: float, alias: str = ALIAS
) -> tuple[bool, str]:
    """Give `alias` to `version` if it is comparable with the holder and scores no worse;
    returns (moved, reason). Comparability is read from the versions' registry tags."""
    # The registry tags are the record of what the version was ranked on.
    tags = tracking.model_version_tags(tracker, name, version)
    moved, reason = champion_decision(tracking.alias_holder(tracker, name, alias), tags, score)
    if moved:
        tracking.set_alias(tracker, name, alias, version)
    return moved, reason


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
            **{axis: f"{best[axis]:g}" for axis in rec.axes if axis != "epoch"},  # guidance, lora_scale...
            "job_run_id": str(best["run_id"]),
            "sweep_id": sweep.sweep_id,
            "checkpoint_sha256": str(row["checkpoint_sha256"]),
            "diagnosis": rec.diagnosis.code,
            "score": f"{score:.6f}",
            **identity_tags(sweep, rec),
        },
    )
    moved, reason = move_alias(sweep.tracker, name, version, score)
    where = "now holds" if moved else "registered without"
    print(
        f"[bespoke_exp] {name} version {version} ({checkpoint.name}) {where} alias @{ALIAS} ({reason}): "
        f"models:/{name}@{ALIAS}"
    )
    return version
