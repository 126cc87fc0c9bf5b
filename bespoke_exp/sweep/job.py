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
from bespoke_exp.config import flatten, job_config, job_fingerprint
from bespoke_exp.generate import checkpoints, image_store
from bespoke_exp.sweep.context import SweepContext
from bespoke_exp.sweep.job_images import generate_images, generation_items
from bespoke_exp.sweep.job_scores import score_images
from bespoke_exp.sweep.resume import earlier_attempts, earlier_images
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
    identity = {"config_fingerprint": tags["config_fingerprint"], "checkpoint_sha256": info.sha256}

    previous, unfinished = earlier_attempts(tracker, identity)
    if previous and not cfg.get("force"):
        if sweep is not None:
            tracking.record_reuse(tracker, sweep.parent_run_id, sweep.job_index, previous)
        print(
            f"{prefix} SKIPPED: identical run {previous} already FINISHED (force=true re-runs it)", flush=True
        )
        return JobResult(run_id=previous, status="SKIPPED", images=0, output_dir=output_dir)

    run_id = start({"checkpoint_sha256": info.sha256})
    try:
        tracking.log_params(tracker, run_id, {"checkpoint.path": str(checkpoint_path)})
        count = _generate_and_log(
            cfg, tracker, run_id, checkpoint_path, output_dir, prefix, identity, unfinished
        )
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
        "config_fingerprint": job_fingerprint(cfg),
        "output_dir": str(output_dir),
        tracking.TAG_ROLE: "job",
    }
    if sweep is not None:
        tags[tracking.TAG_SWEEP_ID] = sweep.sweep_id
    return tags


def _generate_and_log(cfg, tracker, run_id, checkpoint_path, output_dir, prefix, identity, unfinished) -> int:
    items = generation_items(cfg)
    images_dir = output_dir / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(job_config(cfg)))
    names = {
        (item.prompt_id, item.seed): image_store.image_file_name(item.prompt_id, item.seed) for item in items
    }

    timings = {}
    earlier = earlier_images(unfinished, identity, list(names.values()), prefix)
    if earlier is not None:
        generated = {key: earlier[name] for key, name in names.items()}
        for key, image in generated.items():
            image.save(images_dir / names[key])
    else:
        generated, timings, token_counts = generate_images(cfg, checkpoint_path, images_dir, names, prefix)
        tracking.log_params(tracker, run_id, token_counts)
    image_store.write_manifest(images_dir, identity, list(names.values()))

    prompt_ids = [str(p.id) for p in cfg.prompts["items"]]
    seeds = [int(s) for s in cfg.sampler.seeds]
    sheet = labelled_sheet(
        [[generated[(pid, seed)] for seed in seeds] for pid in prompt_ids],
        prompt_ids,
        [f"seed {s}" for s in seeds],
        title=f"{cfg.checkpoint.stem}  {run_name(int(cfg.epoch), float(cfg.sampler.guidance))}",
    )
    sheet.save(output_dir / "sheet.png")

    scores = score_images(cfg, generated)
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
