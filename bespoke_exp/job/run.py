"""One job: one LoRA epoch at one guidance and LoRA strength, every prompt x every seed, into one
MLflow run. Epoch 0 is the base model without the LoRA (the baseline); `trigger=off` generates
every prompt without its trigger words (job/trigger.py).

`run_job(cfg, output_dir=..., sweep=...)` is what the CLI calls and what tests call. It reads
as its steps: check the config, the checkpoint and the prompts' texts, what earlier work to
reuse, the images, their scores, the log. Images are written to `output_dir` before they are
logged, so nothing generated is lost if tracking fails afterwards.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from PIL import Image

from bespoke_exp import tracking
from bespoke_exp.config import SWEEP_AXES, flatten, job_config
from bespoke_exp.config.params import is_baseline
from bespoke_exp.generate import checkpoints, image_store
from bespoke_exp.interrupts import interrupts_deferred
from bespoke_exp.job.identity import TAG_GENERATION, TAG_SCORING, generation_identity
from bespoke_exp.job.images import ImageKey, generate_images, generation_items
from bespoke_exp.job.prompt_sets import expand_prompt_set
from bespoke_exp.job.resume import Reuse, decide_reuse
from bespoke_exp.job.scores import ImageScores, make_scorer, score_images
from bespoke_exp.job.trigger import GeneratedPrompts, generated_prompts
from bespoke_exp.job.validate import validate_job_config
from bespoke_exp.pixelart.sheets import labelled_sheet

TRAIN_PARAM_PREFIX = "train."  # the checkpoint's training settings, as params
BASE_MODEL_PATH = "none (base model)"  # the baseline's checkpoint.path param: no LoRA file


@dataclass(frozen=True)
class SweepContext:
    """What a job needs to know about the sweep it belongs to (sweep.context reads and writes it)."""

    sweep_id: str
    parent_run_id: str
    total_jobs: int | None
    job_index: int = 0  # 0-based, Hydra's job.num
    # "host:pid" of the process that started the sweep. A job running elsewhere runs in a
    # launcher's worker (joblib, submitit), where a kill should end that job, not the sweep.
    launched_by: str = ""

    def in_worker(self) -> bool:
        """True when this job runs in a process other than the one that launched the sweep."""
        return bool(self.launched_by) and self.launched_by != this_process()


def this_process() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class JobResult:
    run_id: str
    status: str  # FINISHED, or SKIPPED when an identical FINISHED run was reused
    images: int
    output_dir: Path


@dataclass(frozen=True)
class JobImages:
    """The job's images by (prompt id, seed), with what making them cost and recorded."""

    images: dict[ImageKey, Image.Image]
    names: dict[ImageKey, str]  # file names, in `images/` and in the run's artifacts
    timings: dict[str, float]  # empty when they were reused
    token_counts: dict[str, str]


def run_job(cfg: DictConfig, *, output_dir: Path, sweep: SweepContext | None = None) -> JobResult:
    """Generate, score and log one job, or reuse an identical FINISHED run (unless `force`).

    Bad config and an unusable tracking store raise before any run is created; any later
    error marks the run FAILED (KILLED for Ctrl-C / SIGTERM) and re-raises.
    """
    # 1. The config, the store, the model's files.
    validate_job_config(cfg)
    tracker = tracking.connect(cfg.tracking.uri, cfg.tracking.experiment, cfg.tracking.artifact_location)
    if cfg.model.build_demo:
        from bespoke_exp.demo.build import ensure_demo

        ensure_demo(Path(cfg.paths.demo))
    # Templates into items, splits from the training captions (which the demo's build writes).
    cfg = expand_prompt_set(cfg)
    name = job_name(cfg)
    prefix = _progress_prefix(sweep, name)
    open_run = _run_opener(cfg, tracker, name, _job_tags(cfg, output_dir, sweep), sweep)

    # 2. The checkpoint (none for the base model) and the text each prompt is generated from:
    # one that can't be used fails a run, so the sweep has it on record.
    info, prompts = _checkpoint_and_prompts(cfg, tracker, open_run, prefix)

    # 3. Earlier work: an identical FINISHED run ends the job here.
    scorer = make_scorer(cfg)
    texts = None if prompts.trigger else prompts.texts
    identity = {TAG_GENERATION: generation_identity(cfg, device_kind(cfg), texts)}
    if info is not None:
        identity["checkpoint_sha256"] = info.sha256
    reuse = decide_reuse(tracker, identity, scorer.identity, force=cfg.force)
    if reuse.done_by:
        _record_reuse(tracker, reuse.done_by, cfg, sweep, prefix)
        return JobResult(run_id=reuse.done_by, status="SKIPPED", images=0, output_dir=output_dir)

    run_id = None
    try:
        # A kill while the run is being created lands here, once its id is known, so the run is
        # closed KILLED instead of left RUNNING.
        with interrupts_deferred():
            tags = {**reuse.tags(), **(checkpoint_tags(info) if info else {}), TAG_SCORING: scorer.identity}
            run_id = open_run(tags, info)
        tracking.log_params(tracker, run_id, prompts.params())
        # 4. The images: reused or generated, on disk before anything is logged.
        lora = info.path if info else None
        images = _images(cfg, tracker, lora, prompts.texts, output_dir / "images", reuse, prefix)
        # 5. Their scores: of the prompts as written (trigger words carry no expectations).
        scores = score_images(cfg, images.images, scorer)
        # 6. The log.
        _log_job(cfg, tracker, run_id, output_dir, images, scores, prompts)
        tracking.finish_run(tracker, run_id)
    except BaseException as error:
        if run_id is None:  # the store could not create the run: there is none to close
            raise
        close_failed_run(tracker, run_id, error, prefix)
        raise
    return JobResult(run_id=run_id, status="FINISHED", images=len(images.images), output_dir=output_dir)


def job_name(cfg: DictConfig) -> str:
    """The job run's name: its axes; the LoRA strength only when it is not the full 1.0 and a
    LoRA is applied (not for the base model, epoch 0); the trigger only when it is off."""
    axes = axis_values(cfg)
    strength = axes.get("lora_scale", 1.0)
    suffix = f" lora_scale={strength:g}" if strength != 1.0 and not is_baseline(cfg) else ""
    suffix += " trigger=off" if axes.get("trigger", 1.0) == 0.0 else ""
    return f"epoch={axes['epoch']:02d} guidance={axes['guidance']:g}{suffix}"


def axis_values(cfg: DictConfig) -> dict[str, float]:
    """Each sweep axis (config.SWEEP_AXES) at the value this job uses: epoch as int, others float
    (trigger: 1.0 on, 0.0 off)."""
    values = {axis: OmegaConf.select(cfg, key) for axis, key in SWEEP_AXES.items()}
    return {axis: int(v) if axis == "epoch" else float(v) for axis, v in values.items() if v is not None}


def job_params(cfg: DictConfig) -> dict[str, str]:
    """The job's config as MLflow params, `lora_scale` as applied: `checkpoint.lora_scale=` set
    apart from the top-level shortcut leaves the shortcut at 1.0."""
    return {**flatten(job_config(cfg)), "lora_scale": str(float(cfg.checkpoint.lora_scale))}


def device_kind(cfg: DictConfig) -> str:
    """cpu, cuda or mps: part of the generation identity (the same seed differs across them)."""
    from bespoke_exp.generate.pipeline import resolve_device

    return resolve_device(cfg.model.device).split(":")[0]


def _run_opener(
    cfg: DictConfig, tracker: tracking.Tracker, name: str, tags: dict[str, str], sweep: SweepContext | None
) -> Callable[..., str]:
    """open_run(extra tags, checkpoint info or None) -> the id of the job's new RUNNING run."""

    def open_run(extra_tags: dict[str, str], info: checkpoints.CheckpointInfo | None) -> str:
        run_id = tracking.start_run(
            tracker,
            name,
            parent_run_id=sweep.parent_run_id if sweep else None,
            params={**job_params(cfg), **(train_params(info) if info else {})},
            tags={**tags, **extra_tags},
        )
        if sweep is None:
            tracking.set_tags(tracker, run_id, {tracking.TAG_SWEEP_ID: run_id})  # its own parent
        if is_baseline(cfg):
            tracking.log_params(tracker, run_id, {"checkpoint.path": BASE_MODEL_PATH})
        elif info is not None:
            tracking.log_params(tracker, run_id, {"checkpoint.path": str(info.path)})
            if info.training:  # the header's whole record, for retraining from this run
                tracking.log_dict(tracker, run_id, info.training, tracking.TRAINING_SETTINGS)
        return run_id

    return open_run


def _checkpoint_and_prompts(
    cfg: DictConfig, tracker: tracking.Tracker, open_run: Callable[..., str], prefix: str
) -> tuple[checkpoints.CheckpointInfo | None, GeneratedPrompts]:
    """The epoch's file, described and checked against the base model's LoRA family before
    anything loads (None for the base model, epoch 0: no file is read); and each prompt's text
    as generated (with trigger=off, less the trigger words)."""
    c = cfg.checkpoint
    info = None
    try:
        if not is_baseline(cfg):
            path = checkpoints.resolve_checkpoint(c.dir, c.stem, cfg.epoch, c.epochs)
            info = checkpoints.describe_checkpoint(path, cfg.epoch)
            checkpoints.check_family(info, cfg.model.family, f"model={cfg.model.name}")
        prompts = generated_prompts(cfg, info.path if info else None)
    except checkpoints.CheckpointError as error:
        with interrupts_deferred():  # a kill in between must not leave the run RUNNING
            run_id = open_run(checkpoint_tags(info) if info else {}, info)
            close_failed_run(tracker, run_id, error, prefix)
        raise
    if not prompts.trigger:
        print(f"{prefix} trigger=off: leaving out {', '.join(prompts.words)} ({prompts.source})", flush=True)
        if prompts.unchanged:
            print(
                f"{prefix} note: prompt(s) {', '.join(prompts.unchanged)} hold no trigger word: "
                "generated as written, the same as with trigger=on",
                flush=True,
            )
    return info, prompts


def _record_reuse(
    tracker: tracking.Tracker, run_id: str, cfg: DictConfig, sweep: SweepContext | None, prefix: str
) -> None:
    # An identical run made before an axis existed (trigger) ran at the value this job has, but
    # lacks its tag: without it the analysis could not place the run on that axis.
    have = tracking.get_run(tracker, run_id).data.tags
    missing = {k: v for k, v in axis_tags(cfg).items() if k not in have}
    if missing:
        tracking.set_tags(tracker, run_id, missing)
    if sweep is not None:
        tracking.record_reuse(tracker, sweep.parent_run_id, sweep.job_index, run_id)
    print(f"{prefix} SKIPPED: identical run {run_id} already FINISHED (force=true re-runs it)", flush=True)


def _images(
    cfg: DictConfig,
    tracker: tracking.Tracker,
    checkpoint_path: Path | None,
    texts: dict[str, str],
    images_dir: Path,
    reuse: Reuse,
    prefix: str,
) -> JobImages:
    """The job's images, each saved in `images_dir`, with the manifest that vouches for them."""
    images_dir.mkdir(parents=True, exist_ok=True)
    keys = [(item.prompt_id, item.seed) for item in generation_items(cfg)]
    names = {key: image_store.image_file_name(*key) for key in keys}
    earlier = reuse.earlier_images(tracker, list(names.values()), prefix)
    if earlier is not None:
        images = {key: earlier[name] for key, name in names.items()}
        for key, image in images.items():
            image.save(images_dir / names[key])
        made = JobImages(images, names, {}, {})
    else:
        images, timings, token_counts = generate_images(
            cfg, checkpoint_path, texts, images_dir, names, prefix
        )
        made = JobImages(images, names, timings, token_counts)
    image_store.write_manifest(images_dir, reuse.identity, list(names.values()))
    return made


def _log_job(
    cfg: DictConfig,
    tracker: tracking.Tracker,
    run_id: str,
    output_dir: Path,
    made: JobImages,
    scores: ImageScores,
    prompts: GeneratedPrompts,
) -> None:
    """Everything the run keeps: config, contact sheet, images, per-image and per-check tables,
    aggregate scores and timings; with trigger=off, the texts generated beside the prompts."""
    (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(job_config(cfg)))
    prompt_ids = [p.id for p in cfg.prompts["items"]]
    seeds = list(cfg.sampler.seeds)
    sheet = labelled_sheet(
        [[made.images[(pid, seed)] for seed in seeds] for pid in prompt_ids],
        prompt_ids,
        [f"seed {s}" for s in seeds],
        title=f"{'base model' if is_baseline(cfg) else cfg.checkpoint.stem}  {job_name(cfg)}",
    )
    sheet.save(output_dir / "sheet.png")
    tracking.log_params(tracker, run_id, made.token_counts)
    if not prompts.trigger:
        written = {p.id: str(p.text) for p in cfg.prompts["items"]}
        generated = [
            {
                "prompt_id": pid,
                "written": written[pid],
                "generated": text,
                "left_out": ", ".join(prompts.words),
            }
            for pid, text in prompts.texts.items()
        ]
        tracking.log_table(tracker, run_id, generated, "trigger/prompts.json")
    tracking.log_table(tracker, run_id, scores.rows, "metrics/per_image.json")
    tracking.log_table(tracker, run_id, scores.checks, "metrics/checks.json")
    tracking.log_artifacts(tracker, run_id, output_dir / "images", "images")
    tracking.log_artifact(tracker, run_id, output_dir / "sheet.png")
    tracking.log_artifact(tracker, run_id, output_dir / "config.yaml")
    tracking.log_image(tracker, run_id, sheet, key="sheet")
    tracking.log_metrics(tracker, run_id, {**scores.aggregates, **made.timings})


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


def axis_tags(cfg: DictConfig) -> dict[str, str]:
    """The job's axes as tags: epoch as an integer, the others as numbers (trigger: 1 or 0)."""
    return {axis: str(v) if axis == "epoch" else f"{v:g}" for axis, v in axis_values(cfg).items()}


def _job_tags(cfg: DictConfig, output_dir: Path, sweep: SweepContext | None) -> dict[str, str]:
    """A job run's identity as tags: what it ran, where its files are, which sweep it is in;
    `baseline=true` on the base model's runs (epoch 0)."""
    tags = {
        **axis_tags(cfg),
        **({"baseline": "true"} if is_baseline(cfg) else {}),
        "output_dir": str(output_dir),
        tracking.TAG_ROLE: "job",
    }
    if sweep is not None:
        tags[tracking.TAG_SWEEP_ID] = sweep.sweep_id
    return tags


def _progress_prefix(sweep: SweepContext | None, name: str) -> str:
    if sweep is None:
        return f"[{name}]"
    total = sweep.total_jobs if sweep.total_jobs is not None else "?"
    return f"[job {sweep.job_index + 1}/{total} {name}]"
