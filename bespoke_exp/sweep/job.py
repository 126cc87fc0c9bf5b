"""One job: one LoRA epoch at one guidance, every prompt x every seed, into one MLflow run.

`run_job(cfg, output_dir=..., sweep=...)` is what the CLI calls and what tests call.
Images are written to `output_dir` before they are logged, so nothing generated is
lost if tracking fails afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from bespoke_exp import tracking
from bespoke_exp.analysis.sheets import labelled_sheet
from bespoke_exp.config import flatten, job_config
from bespoke_exp.generate import checkpoints, image_store
from bespoke_exp.sweep.context import SweepContext
from bespoke_exp.sweep.identity import TAG_GENERATION, TAG_SCORING, generation_fingerprint
from bespoke_exp.sweep.job_images import generate_images, generation_items
from bespoke_exp.sweep.job_scores import make_scorer, score_images
from bespoke_exp.sweep.resume import earlier_attempts, earlier_images, finished_images
from bespoke_exp.sweep.validate import validate_job_config


@dataclass(frozen=True)
class JobResult:
    run_id: str
    status: str  # FINISHED, or SKIPPED when an identical FINISHED run was reused
    images: int
    output_dir: Path


def run_name(epoch: int, guidance: float) -> str:
    return f"epoch={epoch:02d} guidance={guidance:g}"


def run_job(cfg: DictConfig, *, output_dir: Path, sweep: SweepContext | None = None) -> JobResult:
    """Generate, save and log one job, or reuse an identical FINISHED run (unless `force`).

    Bad config and an unusable tracking store raise before any run is created; any later
    error marks the run FAILED (KILLED for Ctrl-C / SIGTERM) and re-raises.
    """
    validate_job_config(cfg)
    epoch, guidance = int(cfg.epoch), float(cfg.sampler.guidance)
    tracker = tracking.connect(
        str(cfg.tracking.uri), str(cfg.tracking.experiment), cfg.tracking.artifact_location
    )
    if cfg.model.get("build_demo"):
        from bespoke_exp.demo.build import ensure_demo

        ensure_demo(Path(cfg.paths.demo))
    name = run_name(epoch, guidance)
    prefix = _progress_prefix(sweep, name)
    tags = _job_tags(cfg, output_dir, sweep)

    def start(extra_tags: dict) -> str:
        run_id = tracking.start_run(
            tracker,
            name,
            parent_run_id=sweep.parent_run_id if sweep else None,
            params=flatten(job_config(cfg)),
            tags={**tags, **extra_tags},
        )
        if sweep is None:
            tracking.set_tags(tracker, run_id, {tracking.TAG_SWEEP_ID: run_id})  # its own parent
        return run_id

    try:
        info = checkpoints.describe_checkpoint(
            checkpoints.resolve_checkpoint(
                cfg.checkpoint.dir, cfg.checkpoint.stem, epoch, int(cfg.checkpoint.epochs)
            ),
            epoch,
        )
    except checkpoints.CheckpointError as error:
        tracking.fail_run(tracker, start({}), error)  # on record in the sweep, like any failure
        print(f"{prefix} FAILED: {error}", flush=True)
        raise
    checkpoint_path = info.path
    scorer = make_scorer(cfg)
    identity = {
        TAG_GENERATION: generation_fingerprint(cfg, device_kind(cfg)),
        "checkpoint_sha256": info.sha256,
    }

    finished, unfinished = earlier_attempts(tracker, identity)
    same_scores = [run.info.run_id for run in finished if run.data.tags.get(TAG_SCORING) == scorer.identity]
    if same_scores and not cfg.get("force"):
        if sweep is not None:
            tracking.record_reuse(tracker, sweep.parent_run_id, sweep.job_index, same_scores[0])
        print(
            f"{prefix} SKIPPED: identical run {same_scores[0]} already FINISHED (force=true re-runs it)",
            flush=True,
        )
        return JobResult(run_id=same_scores[0], status="SKIPPED", images=0, output_dir=output_dir)
    # Same images, other scoring (a metric setting or the scoring code changed): score them anew.
    images_from = finished[0].info.run_id if finished and not cfg.get("force") else None

    run_id = start(
        {**identity, TAG_SCORING: scorer.identity, **({"images_from": images_from} if images_from else {})}
    )
    try:
        tracking.log_params(tracker, run_id, {"checkpoint.path": str(checkpoint_path)})
        sources = ImageSources(identity, unfinished, images_from)
        count = _generate_and_log(cfg, tracker, run_id, checkpoint_path, output_dir, prefix, sources, scorer)
        tracking.finish_run(tracker, run_id)
    except BaseException as error:
        tracking.fail_run(tracker, run_id, error)
        print(f"{prefix} FAILED: {type(error).__name__}: {error}", flush=True)
        raise
    return JobResult(run_id=run_id, status="FINISHED", images=count, output_dir=output_dir)


def _job_tags(cfg: DictConfig, output_dir: Path, sweep: SweepContext | None) -> dict[str, str]:
    """A job run's identity as tags: what it ran, where its files are, which sweep it is in."""
    tags = {
        "epoch": str(int(cfg.epoch)),
        "guidance": f"{float(cfg.sampler.guidance):g}",
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
        title=f"{cfg.checkpoint.stem}  {run_name(int(cfg.epoch), float(cfg.sampler.guidance))}",
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
