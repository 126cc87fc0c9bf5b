"""The config a job is composed from: its types and shared defaults (`schema`), how it is
composed as the command line does (`compose`), what it means as MLflow params and as the job's
fingerprint (`params`), and the command-line sugar Hydra lacks (`overrides`)."""

from bespoke_exp.config.compose import (
    CONF_DIR,
    DEMO_RECIPE,
    PROJECT_ROOT,
    ConfigError,
    compose_config,
    composition_problem,
    default_demo_dir,
    literal_text,
    register_resolvers,
    search_path_overrides,
)
from bespoke_exp.config.params import FINGERPRINT_EXCLUDES, SWEEP_AXES, flatten, job_config, job_fingerprint

__all__ = [
    "CONF_DIR",
    "DEMO_RECIPE",
    "FINGERPRINT_EXCLUDES",
    "PROJECT_ROOT",
    "SWEEP_AXES",
    "ConfigError",
    "compose_config",
    "composition_problem",
    "default_demo_dir",
    "flatten",
    "job_config",
    "job_fingerprint",
    "literal_text",
    "register_resolvers",
    "search_path_overrides",
]
