"""Print the next training run for kohya's sd-scripts, as a sweep's verdict says to train it:

    python -m bespoke_exp.retrain                       # the newest sweep
    python -m bespoke_exp.retrain --sweep ID > next.toml
    accelerate launch sdxl_train_network.py --config_file next.toml   # after filling the <FILL IN>s

The config is the one the sweep logged on its parent run (`retrain/sd_scripts.toml`): the
swept checkpoints' recorded training settings, changed where the retrain advice says, with
what changed as comments at its top. A sweep from before that file is analysed now.
Exit code 2 when the sweep can't be found or its checkpoints record no training settings.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from bespoke_exp import analysis, tracking
from bespoke_exp.analysis import retrain


def main(argv: list[str] | None = None) -> int:
    uri, _ = analysis.default_tracking()
    parser = argparse.ArgumentParser(prog="python -m bespoke_exp.retrain", description=__doc__.split("\n")[0])
    parser.add_argument("--sweep", default=None, help="sweep id or parent run id (default: the newest sweep)")
    parser.add_argument("--tracking-uri", default=uri, help=f"MLflow tracking URI (default: {uri})")
    parser.add_argument("--experiment", default=None, help="experiment (default: the one holding the sweep)")
    args = parser.parse_args(argv)
    try:
        sweep = analysis.load_sweep(args.sweep, tracking_uri=args.tracking_uri, experiment=args.experiment)
        text = logged_config(sweep) or _analysed_now(sweep)
    except (tracking.SweepNotFound, tracking.TrackingError, analysis.AnalysisError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if text is None:
        print(
            f"error: no swept checkpoint of sweep {sweep.sweep_id} records its training settings (kohya's "
            "ss_* header keys): there is nothing to write the next run from",
            file=sys.stderr,
        )
        return 2
    print(text, end="")
    return 0


def logged_config(sweep: analysis.Sweep) -> str | None:
    """The sd-scripts config the sweep logged on its parent run, or None."""
    name = f"{retrain.ARTIFACT_DIR}/{retrain.TOML_FILE}"
    if name not in tracking.list_artifacts(sweep.tracker, sweep.parent_run_id, retrain.ARTIFACT_DIR):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        return tracking.download_artifact(sweep.tracker, sweep.parent_run_id, name, Path(tmp)).read_text()


def _analysed_now(sweep: analysis.Sweep) -> str | None:
    training, prompts = sweep.training_record
    if training is None:
        return None
    print(f"[bespoke_exp] sweep {sweep.sweep_id} has no {retrain.TOML_FILE}: analysed now", file=sys.stderr)
    rec = analysis.recommend(sweep)
    return retrain.sd_scripts_config(training, rec.retrain, prompts, rec.waits_on).to_toml()


if __name__ == "__main__":
    raise SystemExit(main())
