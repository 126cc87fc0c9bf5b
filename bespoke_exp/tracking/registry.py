"""The model registry: a recommended LoRA file as a registered model version, and the version
holding an alias (`@champion`)."""

from __future__ import annotations

from collections.abc import Mapping

from bespoke_exp.tracking.store import Tracker


def register_model_version(
    tracker: Tracker, name: str, *, run_id: str, artifact_path: str, tags: Mapping[str, str]
) -> str:
    """Register `runs:/<run_id>/<artifact_path>` as a new version of `name` (created if new)."""
    client = tracker.client
    if not client.search_registered_models(f"name = '{name}'"):
        client.create_registered_model(name, description="LoRA checkpoints recommended by bespoke_exp sweeps")
    version = client.create_model_version(
        name, source=f"runs:/{run_id}/{artifact_path}", run_id=run_id, tags=tags
    )
    return str(version.version)


def alias_holder(tracker: Tracker, name: str, alias: str) -> tuple[str, dict[str, str]] | None:
    """(version, tags) of the version of `name` holding `alias`, or None."""
    try:
        version = tracker.client.get_model_version_by_alias(name, alias)
    except Exception:  # MLflow raises when no version holds the alias
        return None
    return str(version.version), dict(version.tags)


def set_alias(tracker: Tracker, name: str, alias: str, version: str) -> None:
    tracker.client.set_registered_model_alias(name, alias, version)


def model_version_tags(tracker: Tracker, name: str, version: str) -> dict[str, str]:
    return dict(tracker.client.get_model_version(name, version).tags)
