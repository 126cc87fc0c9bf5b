"""What a sweep costs on top of diffusers: the README's demo sweep three ways, back to back.

    python scripts/bench_sweep.py                       # 10 epochs x guidance 1,1.5,2 on the demo
    python scripts/bench_sweep.py --epochs 1,2,3 --guidance 1.5

1. raw: diffusers alone, as a careful script would do it: the pipeline loaded once, per epoch
   `load_lora_weights` (swapped by adapter name), per guidance one batched call with one
   generator per image; nothing else.
2. harness: `python -m bespoke_exp -m epoch=... guidance=...` into a fresh store, everything on
   (run creation, scoring, images and metrics logged, sheets, the end-of-sweep analysis).
3. naive: the pipeline loaded again for every job, as a per-checkpoint script does.

It prints each one's wall time, harness/raw and naive/harness, the harness's time by stage
(read back from its runs: pipeline load, LoRA switch, generation, scoring and logging, the
analysis at the end, and the process's start) and the harness's peak RSS. All three run on
this machine's cores as they are: compare figures from one run of this script only.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from mlflow import MlflowClient

from bespoke_exp import tracking
from bespoke_exp.config import compose_config
from bespoke_exp.demo.build import ensure_demo
from bespoke_exp.generate.checkpoints import available_epochs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", default="1,2,3,4,5,6,7,8,9,10", help="comma-separated")
    parser.add_argument("--guidance", default="1,1.5,2", help="comma-separated")
    parser.add_argument("--skip-naive", action="store_true", help="leave out the slowest of the three")
    return parser.parse_args(argv)


def _settings():
    cfg = compose_config([])
    root = ensure_demo(Path(str(cfg.paths.demo)))
    return cfg, root


def _items(cfg) -> tuple[list[str], list[int]]:
    """Every prompt x every seed, in the harness's order."""
    pairs = [(p.text, seed) for p in cfg.prompts["items"] for seed in cfg.sampler.seeds]
    return [t for t, _ in pairs], [s for _, s in pairs]


def _pipeline(root: Path):
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    for library in (diffusers_logging, transformers_logging):  # progress bars and notes, per load
        library.set_verbosity_error()
        library.disable_progress_bar()
    pipe = StableDiffusionXLPipeline.from_pretrained(root / "pipeline", local_files_only=True)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _draw(pipe, cfg, prompts: list[str], seeds: list[int], guidance: float) -> None:
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    with torch.inference_mode():
        pipe(
            prompt=prompts,
            num_inference_steps=cfg.sampler.steps,
            guidance_scale=guidance,
            width=cfg.sampler.width,
            height=cfg.sampler.height,
            generator=generators,
        )


def raw(cfg, root: Path, epochs: list[int], guidances: list[float]) -> dict[str, float]:
    files = available_epochs(root / "checkpoints", cfg.checkpoint.stem, cfg.checkpoint.epochs)
    prompts, seeds = _items(cfg)
    times = {"load": 0.0, "switch": 0.0, "generate": 0.0}
    started = time.perf_counter()
    pipe = _pipeline(root)
    times["load"] = time.perf_counter() - started
    for epoch in epochs:
        t = time.perf_counter()
        pipe.unload_lora_weights()
        pipe.load_lora_weights(str(files[epoch].parent), weight_name=files[epoch].name, adapter_name="lora")
        times["switch"] += time.perf_counter() - t
        for guidance in guidances:
            t = time.perf_counter()
            _draw(pipe, cfg, prompts, seeds, guidance)
            times["generate"] += time.perf_counter() - t
    times["wall"] = time.perf_counter() - started
    return times


def naive(cfg, root: Path, epochs: list[int], guidances: list[float]) -> dict[str, float]:
    files = available_epochs(root / "checkpoints", cfg.checkpoint.stem, cfg.checkpoint.epochs)
    prompts, seeds = _items(cfg)
    started = time.perf_counter()
    for epoch in epochs:
        for guidance in guidances:
            pipe = _pipeline(root)
            pipe.load_lora_weights(str(files[epoch].parent), weight_name=files[epoch].name)
            _draw(pipe, cfg, prompts, seeds, guidance)
            del pipe
    return {"wall": time.perf_counter() - started}


def harness(epochs: list[int], guidances: list[float], folder: Path) -> dict[str, float]:
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    command = [
        *(sys.executable, "-m", "bespoke_exp", "-m", f"paths.root={folder}", f"tracking.uri={uri}"),
        *(f"epoch={','.join(map(str, epochs))}", f"guidance={','.join(f'{g:g}' for g in guidances)}"),
    ]
    started = time.time()
    done = subprocess.run(command, capture_output=True, text=True)
    ended = time.time()
    if done.returncode != 0:
        raise SystemExit(f"the harness sweep failed:\n{done.stderr[-3000:]}")
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"wall": ended - started, "peak_rss_mib": peak_kib / 1024, **_stages(uri, started, ended)}


def _stages(uri: str, started: float, ended: float) -> dict[str, float]:
    """The harness's time by stage, from its runs: what each job measured, the rest of each
    job's run (scoring and logging), and what lies outside the jobs."""
    client = MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    jobs = [r for r in runs if r.data.tags.get(tracking.TAG_ROLE) == "job"]
    (parent,) = [r for r in runs if r.data.tags.get(tracking.TAG_ROLE) == "sweep"]
    metric = lambda key: sum(r.data.metrics.get(key, 0.0) for r in jobs)  # noqa: E731
    job_wall = sum((r.info.end_time - r.info.start_time) / 1000 for r in jobs)
    first = min(r.info.start_time for r in jobs) / 1000
    last = max(r.info.end_time for r in jobs) / 1000
    load, switch, generate = (
        metric("time/pipeline_load_s"),
        metric("time/lora_switch_s"),
        metric("time/generate_s"),
    )
    return {
        "start": first - started,
        "load": load,
        "switch": switch,
        "generate": generate,
        "score_and_log": job_wall - load - switch - generate,
        "between_jobs": (last - first) - job_wall,
        "analysis": parent.info.end_time / 1000 - last,
        "exit": ended - parent.info.end_time / 1000,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    epochs = [int(e) for e in args.epochs.split(",")]
    guidances = [float(g) for g in args.guidance.split(",")]
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    cfg, root = _settings()
    jobs = len(epochs) * len(guidances)
    images = jobs * len(_items(cfg)[0])
    print(f"demo sweep: {jobs} jobs x {images // jobs} images, {torch.get_num_threads()} torch threads")
    with tempfile.TemporaryDirectory() as tmp:
        h = harness(epochs, guidances, Path(tmp))
    r = raw(cfg, root, epochs, guidances)
    n = None if args.skip_naive else naive(cfg, root, epochs, guidances)
    print(
        f"raw diffusers  {r['wall']:7.1f} s   load {r['load']:.1f}, LoRA switches {r['switch']:.1f}, "
        f"generation {r['generate']:.1f}"
    )
    print(f"harness        {h['wall']:7.1f} s   harness/raw {h['wall'] / r['wall']:.2f}")
    if n is not None:
        print(f"naive          {n['wall']:7.1f} s   naive/harness {n['wall'] / h['wall']:.2f}")
    print(
        "harness by stage (s): "
        + ", ".join(
            f"{k} {h[k]:.1f}"
            for k in (
                "start",
                "load",
                "switch",
                "generate",
                "score_and_log",
                "between_jobs",
                "analysis",
                "exit",
            )
        )
    )
    print(f"harness peak RSS {h['peak_rss_mib']:.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
