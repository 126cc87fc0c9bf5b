"""Composing a job's config as `python -m bespoke_exp` does: where conf/ and the demo live, the
resolvers conf/ uses, the typed schema underneath, free text taken literally, the user's own
config folders, and type errors said in one line. Plain Hydra and OmegaConf; nothing here
starts a job."""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Iterable
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict, read_write
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

from bespoke_exp.config.schema import must, register_schemas

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
PROJECT_ROOT = CONF_DIR.parent

# The embedded demo's recipe: bump when bespoke_exp.demo changes what it builds. Each
# recipe builds into its own folder, so old builds are left untouched.
DEMO_RECIPE = "v4"


def default_demo_dir() -> Path:
    """Where the demo lives unless `BESPOKE_EXP_DEMO_DIR` says otherwise."""
    override = os.environ.get("BESPOKE_EXP_DEMO_DIR")
    if override:
        return Path(override).expanduser().resolve()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser()  # empty: unset
    return (cache / "bespoke_exp" / f"demo-{DEMO_RECIPE}").resolve()


def register_resolvers() -> None:
    """The resolvers conf/config.yaml uses for `paths.*`, and the schema it starts from."""
    register_schemas()
    OmegaConf.register_new_resolver("bespoke_project_root", lambda: str(PROJECT_ROOT), replace=True)
    OmegaConf.register_new_resolver("bespoke_demo_dir", lambda: str(default_demo_dir()), replace=True)
    # Cached like Hydra's own `now`, so every later read of the sweep folder gets the same token.
    OmegaConf.register_new_resolver(
        "bespoke_token", lambda: secrets.token_hex(2), use_cache=True, replace=True
    )


class ConfigError(ValueError):
    """A config value is wrong; the message names the key, the value and what is allowed."""


# Free text is data: OmegaConf would resolve a prompt reading "${oc.env:API_TOKEN}" to the token
# and log it as a param. Every string under these keys is taken exactly as written.
LITERAL_KEYS = ("prompts.items", "sampler.negative_prompt")


def literal_text(cfg: DictConfig) -> DictConfig:
    """Escape `${` in every string under LITERAL_KEYS so it resolves to exactly the text written
    (in place; returns `cfg`). Call it once, where a config is composed: escaping is not idempotent."""
    with read_write(cfg), open_dict(cfg):
        for key in LITERAL_KEYS:
            parent_key, _, leaf = key.rpartition(".")
            parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
            if isinstance(parent, DictConfig) and leaf in parent:
                _escape_strings(parent, leaf)
    return cfg


def _escape_strings(container: DictConfig | ListConfig, key: str | int) -> None:
    node = container._get_node(key)
    if isinstance(node, (DictConfig, ListConfig)):
        for child in node.keys() if isinstance(node, DictConfig) else range(len(node)):
            _escape_strings(node, child)
        return
    raw = node._value()
    if isinstance(raw, str) and "${" in raw:
        # k backslashes before `${` become 2k+1: they resolve back to k backslashes and a literal `${`.
        container[key] = re.sub(r"(\\*)\$\{", lambda m: "\\" * (2 * len(m[1]) + 1) + "${", raw)


def compose_config(overrides: Iterable[str] = (), search_path: Iterable[str] = ()) -> DictConfig:
    """conf/config.yaml composed with `overrides`, as `python -m bespoke_exp` composes it
    (outside a running Hydra app), free text taken literally. `search_path`: further config
    folders (`file://...`, `pkg://...`), as `--config-dir` or `hydra.searchpath` add them."""
    from hydra import compose, initialize_config_dir

    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        try:
            composed = compose(
                config_name="config", overrides=[*search_path_overrides(search_path), *overrides]
            )
        except Exception as error:
            raise ConfigError(composition_problem(error)) from None
    return literal_text(composed)


def composition_problem(error: BaseException) -> str:
    """One line for a config that could not be composed: a value of the wrong type says which key,
    which value and what it must be (the schema's word), anything else Hydra's own first line."""
    cause = error
    while cause is not None and not isinstance(cause, OmegaConfBaseException):
        cause = cause.__cause__
    if isinstance(cause, ValidationError) and getattr(cause, "full_key", None):
        return type_problem(cause)
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and getattr(cause, "full_key", None):
        known = re.search(r"not in '(\w+)'", str(cause))
        where = f" ({known.group(1)} in bespoke_exp/config/schema.py lists the keys)" if known else ""
        return f"{cause.full_key}: no such setting{where}"
    text = str(error).strip()
    if not text:
        return type(error).__name__
    options = re.search(r"Available options in '([^']+)':\n((?:\t.*\n?)+)", text)
    where = f" (available: {', '.join(options.group(2).split())})" if options else ""
    return text.splitlines()[0] + where


def type_problem(error: ValidationError) -> str:
    """`key=value must be ...` for a value OmegaConf could not convert to the key's type, in the
    schema's words (`must`) or the type's."""
    full = str(error.full_key)
    key = re.sub(r"\[\d+\]$", "", full)  # sampler.seeds[0] -> sampler.seeds
    said = re.search(r"converted to (\w+)|valid (bool)", str(error))
    word = said and (said.group(1) or said.group(2))
    typed = _TYPE_WORDS.get(word, f"a {word.lower()}") if word else "of another type"
    what = must(key) or typed
    if key != full:  # one element of a list
        return f"{key} holds {error.value!r}: it must be {what}"
    return f"{key}={error.value!r} must be {what}"


_TYPE_WORDS = {"Integer": "an integer", "Float": "a number", "bool": "true or false", "String": "text"}


def search_path_overrides(search_path: Iterable[str]) -> list[str]:
    """The Hydra override that adds `search_path` (config folders as URIs) to the search path."""
    entries = [json.dumps(str(entry)) for entry in search_path]
    return [f"hydra.searchpath=[{','.join(entries)}]"] if entries else []
