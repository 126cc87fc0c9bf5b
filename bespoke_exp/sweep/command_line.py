"""The command line before Hydra sees it: `epoch=1,2,...,10` expanded, the settings it fixes
composed once (a wrong-typed value refused in one line, as a job's would be), and `epoch=all`
turned into the epochs the checkpoint folder holds.

    python -m bespoke_exp -m epoch=all guidance=5,7.5,10

`epoch=all` reads the folder and names from the config the other overrides compose (checkpoint
group, `checkpoint.dir`, `checkpoint.stem`, `checkpoint.epochs`, `experiment=...`, a user's own
config folder given with `--config-dir` or `hydra.searchpath`) with kohya's naming
(`generate.checkpoints.available_epochs`): `{stem}-{N:06d}.safetensors` is epoch N, the bare
`{stem}.safetensors` the final epoch `checkpoint.epochs`. The argument becomes `epoch=1,2,...`,
so the sweep's parent run records the epochs it swept.
"""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig

from bespoke_exp.config import ConfigError, compose_config
from bespoke_exp.config.overrides import expand_arguments, single_value_overrides
from bespoke_exp.generate.checkpoints import available_epochs
from bespoke_exp.job.validate import demo_pending

ALL = "epoch=all"


def prepare_command_line(argv: list[str]) -> list[str]:
    """The arguments Hydra should see; ConfigError for a value of the wrong type among the ones
    the command fixes, or an `epoch=all` with no epoch files. Values a sweep varies are checked
    per job by the sweep callback."""
    argv = expand_arguments(argv)
    fixed = [a for a in argv if a != ALL]
    cfg = compose_config(_fixed_overrides(fixed), _config_dirs(fixed))
    if ALL not in argv:
        return argv
    epochs = swept_epochs(cfg)
    print(f"[bespoke_exp] epoch=all: epochs {','.join(map(str, epochs))}", file=sys.stderr)
    return [f"epoch={','.join(map(str, epochs))}" if a == ALL else a for a in argv]


def swept_epochs(cfg: DictConfig) -> list[int]:
    """Every epoch with a file in `checkpoint.dir`, ascending; ConfigError naming the folder and
    stem when there is none. The embedded demo, not built yet, will hold every epoch."""
    folder, stem, final = cfg.checkpoint.dir, cfg.checkpoint.stem, cfg.checkpoint.epochs
    if final < 1:
        raise ConfigError(f"epoch=all needs checkpoint.epochs (the trainer's last epoch), got {final!r}")
    if demo_pending(cfg, folder):  # the first job builds the demo, every epoch of it
        return list(range(1, final + 1))
    found = available_epochs(Path(folder), stem, final)
    if not found:
        where = "is not a folder" if not Path(folder).is_dir() else "holds no epoch files"
        raise ConfigError(
            f"epoch=all: checkpoint.dir={folder} {where} for checkpoint.stem={stem} "
            f"(expected {stem}-000001.safetensors ... or {stem}.safetensors)"
        )
    return list(found)


def _fixed_overrides(argv: list[str]) -> list[str]:
    """The key=value arguments that set one value (not flags, sweeps or Hydra's own settings but
    its search path)."""
    kept = [a for a in argv if "=" in a and not a.startswith("-")]
    return single_value_overrides(
        [a for a in kept if not a.startswith("hydra") or a.startswith("hydra.searchpath=")]
    )


def _config_dirs(argv: list[str]) -> list[str]:
    """`--config-dir DIR` / `-cd DIR` / `--config-dir=DIR` as a search path entry, as Hydra adds it."""
    dirs = []
    for index, argument in enumerate(argv):
        if argument.startswith("--config-dir="):
            dirs.append(argument.split("=", 1)[1])
        elif argument in ("--config-dir", "-cd") and index + 1 < len(argv):
            dirs.append(argv[index + 1])
    return [f"file://{Path(d).expanduser().resolve()}" for d in dirs]
