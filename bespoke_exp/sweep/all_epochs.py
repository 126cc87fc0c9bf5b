"""`epoch=all`: sweep every epoch the checkpoint folder holds.

    python -m bespoke_exp -m epoch=all guidance=5,7.5,10

The folder and names come from the config the other overrides compose (checkpoint group,
`checkpoint.dir`, `checkpoint.stem`, `checkpoint.epochs`, `experiment=...`, a user's own config
folder given with `--config-dir` or `hydra.searchpath`), read with kohya's
naming (`generate.checkpoints.available_epochs`): `{stem}-{N:06d}.safetensors` is epoch N, the
bare `{stem}.safetensors` the final epoch `checkpoint.epochs`. The argument becomes
`epoch=1,2,...` before Hydra sees it, so the sweep's parent run records the epochs it swept.
"""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig

from bespoke_exp.config import ConfigError, compose_config
from bespoke_exp.generate.checkpoints import available_epochs
from bespoke_exp.overrides import single_value_overrides
from bespoke_exp.sweep.validate import demo_pending

ALL = "epoch=all"


def swept_epochs(cfg: DictConfig) -> list[int]:
    """Every epoch with a file in `checkpoint.dir`, ascending; ConfigError naming the folder and
    stem when there is none. The embedded demo, not built yet, will hold every epoch."""
    folder, stem, final = cfg.checkpoint.dir, str(cfg.checkpoint.stem), cfg.checkpoint.epochs
    if not isinstance(final, int) or isinstance(final, bool) or final < 1:
        raise ConfigError(f"epoch=all needs checkpoint.epochs (the trainer's last epoch), got {final!r}")
    if demo_pending(cfg, folder):  # the first job builds the demo, every epoch of it
        return list(range(1, final + 1))
    found = available_epochs(Path(str(folder)), stem, final)
    if not found:
        where = "is not a folder" if not Path(str(folder)).is_dir() else "holds no epoch files"
        raise ConfigError(
            f"epoch=all: checkpoint.dir={folder} {where} for checkpoint.stem={stem} "
            f"(expected {stem}-000001.safetensors ... or {stem}.safetensors)"
        )
    return list(found)


def expand_all_epochs(argv: list[str]) -> list[str]:
    """`epoch=all` in a command line -> `epoch=<every epoch found>`; other arguments pass through.
    The folder is read from the config the command's other fixed overrides compose."""
    if ALL not in argv:
        return argv
    rest = [a for a in argv if a != ALL]
    epochs = swept_epochs(compose_config(_fixed_overrides(rest), _config_dirs(rest)))
    print(f"[bespoke_exp] epoch=all: epochs {','.join(map(str, epochs))}", file=sys.stderr)
    return [f"epoch={','.join(map(str, epochs))}" if a == ALL else a for a in argv]


def _fixed_overrides(argv: list[str]) -> list[str]:
    """The key=value arguments that set one value (not flags, sweeps or Hydra's own settings but
    its search path): enough to compose where the checkpoints are."""
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
