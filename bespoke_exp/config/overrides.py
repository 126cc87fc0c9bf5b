"""Command-line overrides: the sugar Hydra lacks (`epoch=1,2,...,10` as an arithmetic sequence:
Hydra alone reads four values, 1, 2, the string '...' and 10), and the jobs a multirun's
overrides make, expanded by Hydra's own basic sweeper.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_NUMBER = r"-?\d+(?:\.\d+)?"
_ELLIPSIS = re.compile(rf"^(?P<key>[\w.+~/@-]+)=(?P<values>(?:{_NUMBER},)+\.\.\.,{_NUMBER})$")


def expand_ellipsis(argument: str) -> str:
    """`k=a,b,...,z` -> `k=a,b,b+d,...,z` with d = b - a (`k=a,...,z` steps by 1)."""
    match = _ELLIPSIS.match(argument)
    if not match:
        return argument
    key, values = match["key"], match["values"].split(",")
    ellipsis = values.index("...")
    try:
        head = [Decimal(v) for v in values[:ellipsis]]
        end = Decimal(values[-1])
    except InvalidOperation:
        return argument
    step = head[-1] - head[-2] if len(head) >= 2 else Decimal(1)
    if step == 0 or any(b - a != step for a, b in zip(head, head[1:])):
        raise ValueError(f"{argument!r}: the values before '...' must be evenly spaced")
    count = (end - head[0]) / step
    if count < 0 or count != count.to_integral_value():
        raise ValueError(f"{argument!r}: {end} is not reached from {head[0]} in steps of {step}")
    sequence = [head[0] + i * step for i in range(int(count) + 1)]
    return f"{key}={','.join(format(v.normalize(), 'f') for v in sequence)}"


def override_key(argument: str) -> str:
    """The config key an override sets: `a.b=1`, `+a.b=1` and `~a.b` all name `a.b`."""
    return argument.split("=", 1)[0].lstrip("+~")


def expand_arguments(argv: list[str]) -> list[str]:
    """Expand every `key=a,b,...,z` in a command line; other arguments pass through."""
    return [arg if arg.startswith("-") else expand_ellipsis(arg) for arg in argv]


def single_value_overrides(overrides: list[str]) -> list[str]:
    """The overrides that set one value: sweeps (`epoch=1,2,3`) left out."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    return [o.input_line for o in parsed if not o.is_sweep_override()]


def expand_jobs(task_overrides: list[str], sweeper_params: dict | None = None) -> list[list[str]] | None:
    """Each job's overrides, in the order Hydra's basic sweeper runs them; None when the overrides
    can't be expanded here (Hydra will say why)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = list(task_overrides) + [f"{k}={v}" for k, v in (sweeper_params or {}).items()]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
        (jobs,) = BasicSweeper.split_arguments(parsed, max_batch_size=None)
    except Exception:
        return None
    return jobs
