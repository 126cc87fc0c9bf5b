"""A finished sweep as tables, a recommendation and the pictures that back it.

In a notebook:

    from bespoke_exp import analysis
    sweep = analysis.load_sweep()                 # latest sweep (or sweep="<id>")
    sweep.runs[["epoch", "guidance", "score", "adherence/pass_rate"]]
    rec = analysis.recommend(sweep)
    print(rec.to_markdown())

Modules: `load` (the sweep from MLflow), `statistics` (bootstrap ranking and paired
comparisons of the combinations of every swept axis: epoch, guidance, lora_scale...),
`diagnosis` (the epoch-trend rules),
`recommendation` (the pick and its markdown/JSON), `report` (files + parent-run logging,
run at the end of every multirun), `champion` (model registry), `dashboard` and `figures`.
"""

from bespoke_exp.analysis.champion import register_champion
from bespoke_exp.analysis.load import AnalysisError, Sweep, default_tracking, load_sweep
from bespoke_exp.analysis.recommendation import recommend
from bespoke_exp.analysis.report import REPORT_DIR, report_sweep, write_report

__all__ = [
    "REPORT_DIR",
    "AnalysisError",
    "Sweep",
    "default_tracking",
    "load_sweep",
    "recommend",
    "register_champion",
    "report_sweep",
    "write_report",
]
