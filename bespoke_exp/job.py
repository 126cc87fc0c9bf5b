"""One job: one LoRA epoch at one guidance, every prompt x every seed, into one MLflow run.

`run_job(cfg, output_dir=..., sweep=...)` is what the CLI calls and what tests call.
Images are written to `output_dir` before they are logged, so nothing generated is
lost if tracking fails afterwards.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from bespoke_exp import checkpoint as ckpt
from bespoke_exp import image_store, tracking
from bespoke_exp.config import ConfigError, flatten, job_config, job_fingerprint, validate_job_config
from bespoke_exp.grids import labelled_grid
from bespoke_exp.sweep import SweepContext

log = logging.getLogger(__name__)


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
    tracker = tracking.connect(str(cfg.tracking.uri), str(cfg.tracking.experiment), cfg.tracking.artifact_location)
    if cfg.model.get("build_demo"):
        from bespoke_exp.demo import ensure_demo

        ensure_demo(Path(cfg.paths.demo))
    if cfg.checkpoint.get("train_dir"):
        load_training_grids(str(cfg.checkpoint.train_dir), int(cfg.metrics.cells))  # a bad folder fails here
    name = run_name(epoch, guidance)
    prefix = _progress_prefix(sweep, name)
    tags = {
        "epoch": str(epoch),
        "guidance": f"{guidance:g}",
        "config_fingerprint": job_fingerprint(cfg),
        "output_dir": str(output_dir),
        tracking.TAG_ROLE: "job",
    }
    if sweep is not None:
        tags[tracking.TAG_SWEEP_ID] = sweep.sweep_id

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
        checkpoint_path = ckpt.resolve_checkpoint(
            cfg.checkpoint.dir, cfg.checkpoint.stem, epoch, int(cfg.checkpoint.epochs)
        )
        info = ckpt.describe_checkpoint(checkpoint_path, epoch)
    except ckpt.CheckpointError as error:
        tracking.fail_run(tracker, start({}), error)  # on record in the sweep, like any failure
        print(f"{prefix} FAILED: {error}", flush=True)
        raise
    identity = {"config_fingerprint": tags["config_fingerprint"], "checkpoint_sha256": info.sha256}

    attempts = tracking.find_job_runs(tracker, identity)  # earlier runs of this exact work, newest first
    finished = [run for run in attempts if run.info.status == "FINISHED"]
    if finished and not cfg.get("force"):
        previous = finished[0].info.run_id
        if sweep is not None:
            reused_tag = f"{tracking.TAG_REUSED_PREFIX}{sweep.job_index}"
            tracking.set_tags(tracker, sweep.parent_run_id, {reused_tag: previous})
        print(f"{prefix} SKIPPED: identical run {previous} already FINISHED (force=true re-runs it)", flush=True)
        return JobResult(run_id=previous, status="SKIPPED", images=0, output_dir=output_dir)
    unfinished = [run for run in attempts if run.info.status != "FINISHED"]

    run_id = start({"checkpoint_sha256": info.sha256})
    try:
        tracking.log_params(tracker, run_id, {"checkpoint.path": str(checkpoint_path)})
        count = _generate_and_log(cfg, tracker, run_id, checkpoint_path, output_dir, prefix, identity, unfinished)
        tracking.finish_run(tracker, run_id)
    except BaseException as error:
        tracking.fail_run(tracker, run_id, error)
        print(f"{prefix} FAILED: {type(error).__name__}: {error}", flush=True)
        raise
    return JobResult(run_id=run_id, status="FINISHED", images=count, output_dir=output_dir)


def _earlier_images(unfinished, identity, names, prefix) -> dict | None:
    """Images a crashed or killed attempt at this exact job left on disk, if intact."""
    for run in unfinished:
        if "output_dir" not in run.data.tags:
            continue
        images, reason = image_store.load_intact(Path(run.data.tags["output_dir"]) / "images", identity, names)
        verdict = "reusing images" if images else "regenerating"
        print(f"{prefix} earlier attempt {run.info.run_id} ({run.info.status}): {verdict}: {reason}", flush=True)
        if images:
            return images
    return None


def _generate_and_log(cfg, tracker, run_id, checkpoint_path, output_dir, prefix, identity, unfinished) -> int:
    from bespoke_exp import pipeline as pl

    items = [
        pl.GenerationItem(prompt_id=str(p.id), prompt=str(p.text), seed=int(seed))
        for p in cfg.prompts["items"]
        for seed in cfg.sampler.seeds
    ]
    settings = pl.SamplerSettings(
        scheduler=str(cfg.sampler.scheduler),
        steps=int(cfg.sampler.steps),
        guidance=float(cfg.sampler.guidance),
        width=int(cfg.sampler.width),
        height=int(cfg.sampler.height),
        negative_prompt=str(cfg.sampler.negative_prompt),
        batch_size=int(cfg.sampler.batch_size),
    )
    images_dir = output_dir / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(job_config(cfg)))
    names = {(item.prompt_id, item.seed): image_store.image_file_name(item.prompt_id, item.seed) for item in items}

    timings = {}
    earlier = _earlier_images(unfinished, identity, list(names.values()), prefix)
    if earlier is not None:
        generated = {key: earlier[name] for key, name in names.items()}
        for key, image in generated.items():
            image.save(images_dir / names[key])
    else:
        generated, timings, token_counts = _generate(cfg, checkpoint_path, items, settings, images_dir, names, prefix)
        tracking.log_params(tracker, run_id, token_counts)
    image_store.write_manifest(images_dir, identity, list(names.values()))

    prompt_ids = [str(p.id) for p in cfg.prompts["items"]]
    seeds = [int(s) for s in cfg.sampler.seeds]
    grid = labelled_grid(
        [[generated[(pid, seed)] for seed in seeds] for pid in prompt_ids],
        prompt_ids,
        [f"seed {s}" for s in seeds],
        title=f"{cfg.checkpoint.stem}  {run_name(int(cfg.epoch), settings.guidance)}",
    )
    grid.save(output_dir / "grid.png")

    scores = score_images(cfg, generated)
    tracking.log_table(tracker, run_id, scores.rows, "metrics/per_image.json")
    tracking.log_table(tracker, run_id, scores.checks, "metrics/checks.json")

    tracking.log_artifacts(tracker, run_id, images_dir, "images")
    tracking.log_artifact(tracker, run_id, output_dir / "grid.png")
    tracking.log_artifact(tracker, run_id, output_dir / "config.yaml")
    tracking.log_image(tracker, run_id, grid, key="grid")
    tracking.log_metrics(tracker, run_id, {**scores.aggregates, **timings})
    return len(items)


def _generate(cfg, checkpoint_path, items, settings, images_dir, names, prefix) -> tuple[dict, dict, dict]:
    """Images saved as they come; returns them with timings and prompt token counts."""
    from bespoke_exp import pipeline as pl

    timings, token_counts = {}, {}
    started = time.perf_counter()
    pipe = pl.load_pipeline(
        str(cfg.model.pretrained), device=str(cfg.model.device), dtype=cfg.model.dtype, variant=cfg.model.variant
    )
    timings["time/pipeline_load_s"] = time.perf_counter() - started
    pl.set_scheduler(pipe, settings.scheduler)
    for prompt in cfg.prompts["items"]:
        tokens, limit = pl.count_prompt_tokens(pipe, str(prompt.text))
        token_counts[f"prompt_tokens.{prompt.id}"] = str(tokens)
        if tokens > limit:
            print(f"{prefix} note: prompt {prompt.id!r} is {tokens} tokens; the text encoders read the first {limit}")
    generated = {}
    started = time.perf_counter()
    with pl.lora_applied(pipe, checkpoint_path, float(cfg.checkpoint.lora_scale)):
        for done, (item, image) in enumerate(pl.generate(pipe, items, settings), start=1):
            path = images_dir / names[(item.prompt_id, item.seed)]
            image.save(path)  # PNG: lossless, so metrics see exactly what the model made
            generated[(item.prompt_id, item.seed)] = image
            print(f"{prefix} image {done}/{len(items)} {path.name}", flush=True)
    timings["time/generate_s"] = time.perf_counter() - started
    timings["time/per_image_s"] = timings["time/generate_s"] / len(items)
    return generated, timings, token_counts


@dataclass(frozen=True)
class ImageScores:
    rows: list[dict]  # one per image: prompt, seed, every metric
    checks: list[dict]  # one per image x prompt constraint
    aggregates: dict[str, float]  # job-level, plus `by_prompt/<id>/...` per prompt


def score_images(cfg: DictConfig, generated: dict) -> ImageScores:
    """Pixel metrics and prompt checks for every (prompt id, seed) -> image."""
    from bespoke_exp.metrics import aggregate, evaluate, training_match

    m = cfg.metrics
    weights = OmegaConf.to_container(m.weights, resolve=True)
    regions = OmegaConf.to_container(m.regions, resolve=True)
    prompts = {str(p.id): p for p in cfg.prompts["items"]}
    train_dir = cfg.checkpoint.get("train_dir")
    training = load_training_grids(str(train_dir), int(m.cells)) if train_dir else None
    rows, checks, by_prompt = [], [], {}
    for (prompt_id, seed), image in generated.items():
        prompt = prompts[prompt_id]
        evaluation = evaluate(
            image,
            str(prompt.text),
            cells=int(m.cells),
            expectations=[str(e) for e in prompt.get("expectations") or []],
            palette=m.palette,
            weights=weights,
            regions=regions,
            tolerance=int(m.tolerance),
            pass_share=float(m.pass_share),
        )
        if training is not None:
            match = training_match(evaluation.grid, training)
            evaluation.metrics["memorisation/nearest_match"] = match
            evaluation.metrics["memorisation/near_copy"] = float(match >= float(m.near_copy))
        by_prompt.setdefault(prompt_id, []).append(evaluation)
        rows.append({"prompt_id": prompt_id, "split": str(prompt.get("split", "")), "seed": seed, **evaluation.metrics})
        checks += [
            {
                "prompt_id": prompt_id,
                "seed": seed,
                "check": c.name,
                "checked": c.checked,
                "passed": c.passed,
                "passed_tolerant": c.passed_tolerant,
                "detail": c.detail,
            }
            for c in evaluation.checks
        ]
    aggregates = aggregate([e for evs in by_prompt.values() for e in evs])
    for prompt_id, evaluations in by_prompt.items():
        aggregates.update({f"by_prompt/{prompt_id}/{k}": v for k, v in aggregate(evaluations).items()})
    return ImageScores(rows=rows, checks=checks, aggregates=aggregates)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


@functools.lru_cache(maxsize=4)
def load_training_grids(folder: str, cells: int) -> np.ndarray:
    """The recovered cells x cells art of every training image under `folder` (recursive)."""
    from bespoke_exp.pixels import recover_grid

    if not Path(folder).is_dir():
        raise ConfigError(f"checkpoint.train_dir={folder} is not a folder (the training images, or null to skip)")
    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ConfigError(f"checkpoint.train_dir={folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    grids = []
    for file in files:
        with Image.open(file) as image:
            grids.append(np.asarray(recover_grid(image.convert("RGB"), cells)))
    return np.stack(grids)


def _progress_prefix(sweep: SweepContext | None, name: str) -> str:
    if sweep is None:
        return f"[{name}]"
    total = sweep.total_jobs if sweep.total_jobs is not None else "?"
    return f"[job {sweep.job_index + 1}/{total} {name}]"
