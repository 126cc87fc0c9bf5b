"""One job: one LoRA epoch at one guidance, every prompt x every seed, into one MLflow run.

`run_job(cfg, output_dir=..., sweep=...)` is what the CLI calls and what tests call.
Images are written to `output_dir` before they are logged, so nothing generated is
lost if tracking fails afterwards.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from bespoke_exp import checkpoint as ckpt
from bespoke_exp import tracking
from bespoke_exp.config import fingerprint, flatten, job_config, validate_job_config
from bespoke_exp.grids import labelled_grid
from bespoke_exp.sweep import SweepContext

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobResult:
    run_id: str
    status: str
    images: int
    output_dir: Path


def run_name(epoch: int, guidance: float) -> str:
    return f"epoch={epoch:02d} guidance={guidance:g}"


def run_job(cfg: DictConfig, *, output_dir: Path, sweep: SweepContext | None = None) -> JobResult:
    """Generate, save and log one job. Bad config and an unusable tracking store raise
    before any run is created; any later error marks the run FAILED and re-raises."""
    validate_job_config(cfg)
    epoch, guidance = int(cfg.epoch), float(cfg.sampler.guidance)
    tracker = tracking.connect(str(cfg.tracking.uri), str(cfg.tracking.experiment), cfg.tracking.artifact_location)
    if cfg.model.get("build_demo"):
        from bespoke_exp.demo import ensure_demo

        ensure_demo(Path(cfg.paths.demo))
    resolved = job_config(cfg)
    tags = {
        "epoch": str(epoch),
        "guidance": f"{guidance:g}",
        "config_fingerprint": fingerprint(resolved),
        tracking.TAG_ROLE: "job",
    }
    if sweep is not None:
        tags[tracking.TAG_SWEEP_ID] = sweep.sweep_id
    name = run_name(epoch, guidance)
    run_id = tracking.start_run(
        tracker,
        name,
        parent_run_id=sweep.parent_run_id if sweep else None,
        params=flatten(resolved),
        tags=tags,
    )
    if sweep is None:
        tracking.set_tags(tracker, run_id, {tracking.TAG_SWEEP_ID: run_id})  # its own parent
    prefix = _progress_prefix(sweep, name)
    try:
        if cfg.model.get("build_demo"):
            from bespoke_exp.demo import ensure_demo

            ensure_demo(Path(cfg.paths.demo))
        checkpoint_path = ckpt.resolve_checkpoint(
            cfg.checkpoint.dir, cfg.checkpoint.stem, epoch, int(cfg.checkpoint.epochs)
        )
        info = ckpt.describe_checkpoint(checkpoint_path, epoch)
        tracking.set_tags(tracker, run_id, {"checkpoint_sha256": info.sha256})
        tracking.log_params(tracker, run_id, {"checkpoint.path": str(checkpoint_path)})
        count = _generate_and_log(cfg, tracker, run_id, checkpoint_path, output_dir, prefix)
        tracking.finish_run(tracker, run_id)
    except BaseException as error:
        tracking.fail_run(tracker, run_id, error)
        print(f"{prefix} FAILED: {type(error).__name__}: {error}", flush=True)
        raise
    return JobResult(run_id=run_id, status="FINISHED", images=count, output_dir=output_dir)


def _generate_and_log(cfg, tracker, run_id, checkpoint_path, output_dir, prefix) -> int:
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

    started = time.perf_counter()
    pipe = pl.load_pipeline(
        str(cfg.model.pretrained), device=str(cfg.model.device), dtype=cfg.model.dtype, variant=cfg.model.variant
    )
    load_seconds = time.perf_counter() - started
    pl.set_scheduler(pipe, settings.scheduler)
    for prompt in cfg.prompts["items"]:
        tokens, limit = pl.count_prompt_tokens(pipe, str(prompt.text))
        tracking.log_params(tracker, run_id, {f"prompt_tokens.{prompt.id}": str(tokens)})
        if tokens > limit:
            print(f"{prefix} note: prompt {prompt.id!r} is {tokens} tokens; the text encoders read the first {limit}")
    generated = {}
    started = time.perf_counter()
    with pl.lora_applied(pipe, checkpoint_path, float(cfg.checkpoint.lora_scale)):
        for done, (item, image) in enumerate(pl.generate(pipe, items, settings), start=1):
            path = images_dir / f"{item.prompt_id}_seed{item.seed}.png"
            image.save(path)  # PNG: lossless, so metrics see exactly what the model made
            generated[(item.prompt_id, item.seed)] = image
            print(f"{prefix} image {done}/{len(items)} {path.name}", flush=True)
    generate_seconds = time.perf_counter() - started

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
    tracking.log_metrics(
        tracker,
        run_id,
        {
            **scores.aggregates,
            "time/pipeline_load_s": load_seconds,
            "time/generate_s": generate_seconds,
            "time/per_image_s": generate_seconds / len(items),
        },
    )
    return len(items)


@dataclass(frozen=True)
class ImageScores:
    rows: list[dict]  # one per image: prompt, seed, every metric
    checks: list[dict]  # one per image x prompt constraint
    aggregates: dict[str, float]  # job-level, plus `by_prompt/<id>/...` per prompt


def score_images(cfg: DictConfig, generated: dict) -> ImageScores:
    """Pixel metrics and prompt checks for every (prompt id, seed) -> image."""
    from bespoke_exp.metrics import aggregate, evaluate

    m = cfg.metrics
    weights = OmegaConf.to_container(m.weights, resolve=True)
    regions = OmegaConf.to_container(m.regions, resolve=True)
    prompts = {str(p.id): p for p in cfg.prompts["items"]}
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


def _progress_prefix(sweep: SweepContext | None, name: str) -> str:
    if sweep is None:
        return f"[{name}]"
    total = sweep.total_jobs if sweep.total_jobs is not None else "?"
    return f"[job {sweep.job_index + 1}/{total} {name}]"
