"""One job: one LoRA epoch at one guidance and LoRA strength, every prompt x every seed, into one
MLflow run.

`run_job(cfg, output_dir=..., sweep=...)` is what the CLI calls and what tests call.
Images are written to `output_dir` before they are logged, so nothing generated is
lost if tracking fails afterwards.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from bespoke_exp import tracking
from bespoke_exp.analysis.sheets import labelled_sheet
from bespoke_exp.config import SWEEP_AXES, flatten, job_config
from bespoke_exp.generate import checkpoints, image_store
from bespoke_exp.interrupts import interrupts_deferred
from bespoke_exp.sweep.context import SweepContext
from bespoke_exp.sweep.identity import TAG_GENERATION, TAG_SCORING, generation_fingerprint
from bespoke_exp.sweep.job_images import generate_images, generation_items
from bespoke_exp.sweep.job_scores import make_scorer, score_images
from bespoke_exp.sweep.resume import earlier_attempts, earlier_images, finished_images
from bespoke_exp.sweep.validate import validate_job_config

TRAIN_PARAM_PREFIX = "train."  # the checkpoint's training settings, as params


@dataclass(frozen=True)
class JobResult:
    run_id: str
    status: str  # FINISHED, or SKIPPED when an identical FINISHED run was reused
    images: int
    output_dir: Path


def run_name(epoch: int, guidance: float, lora_scale: float = 1.0) -> str:
    """The job run's name: its axes; the LoRA strength only when it is not the full 1.0."""
    strength = f" lora_scale={lora_scale:g}" if lora_scale != 1.0 else ""
    return f"epoch={epoch:02d} guidance={guidance:g}{strength}"


def axis_values(cfg: DictConfig) -> dict[str, float]:
    """Each sweep axis (config.SWEEP_AXES) at the value this job uses: epoch as int, others float."""
    values = {axis: OmegaConf.select(cfg, key) for axis, key in SWEEP_AXES.items()}
    return {axis: int(v) if axis == "epoch" else float(v) for axis, v in values.items() if v is not None}


def _axis_tag(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def _job_name(cfg: DictConfig) -> str:
    axes = axis_values(cfg)
    return run_name(axes["epoch"], axes["guidance"], axes.get("lora_scale", 1.0))


def run_job(cfg: DictConfig, *, output_dir: Path, sweep: SweepContext | None = None) -> JobResult:
    """Generate, save and log one job, or reuse an identical FINISHED run (unless `force`).

    Bad config and an unusable tracking store raise before any run is created; any later
    error marks the run FAILED (KILLED for Ctrl-C / SIGTERM) and re-raises.
    """
    validate_job_config(cfg)
    epoch = int(cfg.epoch)
    tracker = tracking.connect(
        str(cfg.tracking.uri), str(cfg.tracking.experiment), cfg.tracking.artifact_location
    )
    if cfg.model.get("build_demo"):
        from bespoke_exp.demo.build import ensure_demo

        ensure_demo(Path(cfg.paths.demo))
    name = _job_name(cfg)
    prefix = _progress_prefix(sweep, name)
    tags = _job_tags(cfg, output_dir, sweep)

    def start(extra_tags: dict, extra_params: dict | None = None) -> str:
        run_id = tracking.start_run(
            tracker,
            name,
            parent_run_id=sweep.parent_run_id if sweep else None,
            params={**job_params(cfg), **(extra_params or {})},
            tags={**tags, **extra_tags},
        )
        if sweep is None:
            tracking.set_tags(tracker, run_id, {tracking.TAG_SWEEP_ID: run_id})  # its own parent
        return run_id

    info = _usable_checkpoint(cfg, epoch, tracker, start, prefix)
    scorer = make_scorer(cfg)
    identity = {
        TAG_GENERATION: generation_fingerprint(cfg, device_kind(cfg)),
        "checkpoint_sha256": info.sha256,
    }

    finished, unfinished = earlier_attempts(tracker, identity)
    reused = _reuse_finished(cfg, tracker, finished, scorer.identity, sweep, prefix)
    if reused is not None:
        return JobResult(run_id=reused, status="SKIPPED", images=0, output_dir=output_dir)
    # Same images, other scoring (a metric setting or the scoring code changed): score them anew.
    images_from = finished[0].info.run_id if finished and not cfg.get("force") else None

    scoring = {TAG_SCORING: scorer.identity, **({"images_from": images_from} if images_from else {})}
    run_id = None
    try:
        # A kill while the run is being created lands here, once its id is known, so the run
        # is closed KILLED instead of left RUNNING.
        with interrupts_deferred():
            run_id = start({**identity, **checkpoint_tags(info), **scoring}, train_params(info))
        tracking.log_params(tracker, run_id, {"checkpoint.path": str(info.path)})
        if info.training:  # the header's whole record, for retraining from this run
            tracking.log_dict(tracker, run_id, info.training, "checkpoint/training_settings.json")
        sources = ImageSources(identity, unfinished, images_from)
        count = _generate_and_log(cfg, tracker, run_id, info.path, output_dir, prefix, sources, scorer)
        tracking.finish_run(tracker, run_id)
    except BaseException as error:
        if run_id is None:  # the store could not create the run: there is none to close
            raise
        close_failed_run(tracker, run_id, error, prefix)
        raise
    return JobResult(run_id=run_id, status="FINISHED", images=count, output_dir=output_dir)


def job_params(cfg: DictConfig) -> dict[str, str]:
    """The job's config as MLflow params, `lora_scale` as applied: the older
    `checkpoint.lora_scale=` spelling leaves the top-level shortcut at 1.0."""
    return {**flatten(job_config(cfg)), "lora_scale": str(float(cfg.checkpoint.lora_scale))}


def _reuse_finished(
    cfg: DictConfig, tracker: tracking.Tracker, finished: list, scoring: str, sweep, prefix: str
) -> str | None:
    """The id of an identical FINISHED run (same scoring too), recorded as reused; None when
    there is none or `force` is set."""
    same_scores = [run.info.run_id for run in finished if run.data.tags.get(TAG_SCORING) == scoring]
    if not same_scores or cfg.get("force"):
        return None
    if sweep is not None:
        tracking.record_reuse(tracker, sweep.parent_run_id, sweep.job_index, same_scores[0])
    print(
        f"{prefix} SKIPPED: identical run {same_scores[0]} already FINISHED (force=true re-runs it)",
        flush=True,
    )
    return same_scores[0]


def _usable_checkpoint(
    cfg: DictConfig, epoch: int, tracker: tracking.Tracker, start: Callable[..., str], prefix: str
) -> checkpoints.CheckpointInfo:
    """The epoch's file, described and checked against the base model's LoRA family before
    anything loads. A file that can't be used fails a run, so the sweep has it on record."""
    info = None
    try:
        path = checkpoints.resolve_checkpoint(
            cfg.checkpoint.dir, cfg.checkpoint.stem, epoch, int(cfg.checkpoint.epochs)
        )
        info = checkpoints.describe_checkpoint(path, epoch)
        checkpoints.check_family(info, str(cfg.model.family), f"model={cfg.model.name}")
    except checkpoints.CheckpointError as error:
        with interrupts_deferred():  # a kill in between must not leave the run RUNNING
            run_id = start(checkpoint_tags(info), train_params(info)) if info else start({})
            close_failed_run(tracker, run_id, error, prefix)
        raise
    return info


def close_failed_run(tracker: tracking.Tracker, run_id: str, error: BaseException, prefix: str) -> None:
    """Mark the run FAILED (KILLED after Ctrl-C or a kill) and say so; when the store can't take
    even that (a full disk), say the run stays RUNNING, as it does, instead."""
    state = tracking.failure_status(error)
    try:
        tracking.fail_run(tracker, run_id, error)
    except Exception as close_error:
        print(
            f"{prefix} stopped by {type(error).__name__}: {error}; its run {run_id} could not be marked "
            f"{state} ({tracking.first_line(close_error)}) and stays RUNNING until the next sweep or "
            "rank on this machine marks it KILLED",
            flush=True,
        )
        return
    print(f"{prefix} {state}: {type(error).__name__}: {error}", flush=True)


def checkpoint_tags(info: checkpoints.CheckpointInfo) -> dict[str, str]:
    """What the LoRA file is, as tags: its content (sha256), family and rank."""
    return {
        "checkpoint_sha256": info.sha256,
        "checkpoint_family": info.family,
        "checkpoint_rank": "unknown" if info.rank is None else str(info.rank),
    }


def train_params(info: checkpoints.CheckpointInfo) -> dict[str, str]:
    """The training settings the file's header holds, as `train.*` params (lists as JSON)."""
    settings = checkpoints.headline_settings(info.training)
    return {
        f"{TRAIN_PARAM_PREFIX}{key}": json.dumps(value)
        if isinstance(value, list) or value is None
        else str(value)
        for key, value in settings.items()
    }


def _job_tags(cfg: DictConfig, output_dir: Path, sweep: SweepContext | None) -> dict[str, str]:
    """A job run's identity as tags: what it ran, where its files are, which sweep it is in."""
    tags = {
        **{axis: _axis_tag(value) for axis, value in axis_values(cfg).items()},
        "output_dir": str(output_dir),
        tracking.TAG_ROLE: "job",
    }
    if sweep is not None:
        tags[tracking.TAG_SWEEP_ID] = sweep.sweep_id
    return tags


@dataclass(frozen=True)
class ImageSources:
    """Where a job's images may come from before generating: the images of a FINISHED run of
    the same generation, or the intact images of a crashed attempt (`identity` vouches)."""

    identity: dict[str, str]
    unfinished: list
    finished_run_id: str | None


def device_kind(cfg: DictConfig) -> str:
    """cpu, cuda or mps: part of the generation identity (the same seed differs across them)."""
    from bespoke_exp.generate.pipeline import resolve_device

    return resolve_device(str(cfg.model.device)).split(":")[0]


def _generate_and_log(cfg, tracker, run_id, checkpoint_path, output_dir, prefix, sources, scorer) -> int:
    items = generation_items(cfg)
    images_dir = output_dir / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(job_config(cfg)))
    names = {
        (item.prompt_id, item.seed): image_store.image_file_name(item.prompt_id, item.seed) for item in items
    }

    timings = {}
    if sources.finished_run_id:
        print(
            f"{prefix} scoring the images of run {sources.finished_run_id} (same generation, other scoring)"
        )
        earlier = finished_images(tracker, sources.finished_run_id, list(names.values()))
    else:
        earlier = earlier_images(sources.unfinished, sources.identity, list(names.values()), prefix)
    if earlier is not None:
        generated = {key: earlier[name] for key, name in names.items()}
        for key, image in generated.items():
            image.save(images_dir / names[key])
    else:
        generated, timings, token_counts = generate_images(cfg, checkpoint_path, images_dir, names, prefix)
        tracking.log_params(tracker, run_id, token_counts)
    image_store.write_manifest(images_dir, sources.identity, list(names.values()))

    prompt_ids = [str(p.id) for p in cfg.prompts["items"]]
    seeds = [int(s) for s in cfg.sampler.seeds]
    sheet = labelled_sheet(
        [[generated[(pid, seed)] for seed in seeds] for pid in prompt_ids],
        prompt_ids,
        [f"seed {s}" for s in seeds],
        title=f"{cfg.checkpoint.stem}  {_job_name(cfg)}",
    )
    sheet.save(output_dir / "sheet.png")

    scores = score_images(cfg, generated, scorer)
    tracking.log_table(tracker, run_id, scores.rows, "metrics/per_image.json")
    tracking.log_table(tracker, run_id, scores.checks, "metrics/checks.json")

    tracking.log_artifacts(tracker, run_id, images_dir, "images")
    tracking.log_artifact(tracker, run_id, output_dir / "sheet.png")
    tracking.log_artifact(tracker, run_id, output_dir / "config.yaml")
    tracking.log_image(tracker, run_id, sheet, key="sheet")
    tracking.log_metrics(tracker, run_id, {**scores.aggregates, **timings})
    return len(items)


def _progress_prefix(sweep: SweepContext | None, name: str) -> str:
    if sweep is None:
        return f"[{name}]"
    total = sweep.total_jobs if sweep.total_jobs is not None else "?"
    return f"[job {sweep.job_index + 1}/{total} {name}]"
