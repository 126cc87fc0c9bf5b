"""The next sweep: when the best value of an axis sits at the edge of what was swept, the
command that extends that axis past it, and for guidance, into the range the model follows
prompts in (`model.guidance_range`).

An extension keeps the sweep's other overrides, so the combinations already run are reused
(identical FINISHED work is never redone) and the new ones pair with them on the same seeds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bespoke_exp.config.overrides import override_key

# Classifier-free guidance at 1 is the conditional prediction alone: below it there is nothing
# to extend to.
MIN_GUIDANCE = 1.0
STRENGTH_AXES = ("lora_scale",)  # further axes on a scale that goes on past its edges (not trigger)


@dataclass(frozen=True)
class NextSweep:
    axis: str
    values: list[float]
    reason: str
    command: str
    # True when the sweep never reached where the model follows prompts: its verdict, retrain
    # advice included, waits on this sweep
    comes_first: bool = False


def propose_sweeps(
    best: Mapping[str, float],
    swept: Mapping[str, Sequence[float]],
    overrides: Sequence[str],
    final_epoch: int | None = None,
    guidance_range: tuple[float, float] | None = None,
) -> list[NextSweep]:
    """The sweeps that would tell whether a better value lies past the edge of an axis.
    `best`: the best combination's value per axis; `swept`: every value each axis was asked for
    (epoch without the base model's 0); `overrides`: the sweep's command line."""
    proposals = [
        _guidance(float(best["guidance"]), sorted(swept.get("guidance", [])), guidance_range),
        _epoch(int(best["epoch"]), sorted(int(e) for e in swept.get("epoch", []) if e), final_epoch),
    ]
    for axis in (a for a in STRENGTH_AXES if a in swept and a in best):
        proposals.append(_beyond_edge(axis, float(best[axis]), sorted(swept[axis]), lowest=1e-6))
    return [
        NextSweep(axis, values, reason, _command(overrides, axis, values), comes_first)
        for axis, values, reason, comes_first in filter(None, proposals)
    ]


def _guidance(best: float, levels: list[float], span: tuple[float, float] | None):
    if span is not None and levels and not any(span[0] <= g <= span[1] for g in levels):
        low, high = span
        values = sorted({low, (low + high) / 2, high})
        reason = (
            f"no swept guidance ({_listed(levels)}) lies in {low:g}-{high:g}, the range the model "
            "follows prompts in (model.guidance_range): sweep that range"
        )
        return "guidance", values, reason, True
    if span is not None and levels and best <= levels[0] and best <= span[0]:
        return None  # at the bottom of the model's range: lower ignores the prompt
    if span is not None and levels and best >= levels[-1] and best >= span[1]:
        return None  # at the top of the model's range: higher burns
    edge = _beyond_edge("guidance", best, levels, lowest=MIN_GUIDANCE, clamp=True)
    if edge and span is not None:  # stay inside the range the model follows prompts in
        axis, values, reason, comes_first = edge
        inside = sorted({min(max(v, span[0]), span[1]) for v in values} | {best})
        edge = (axis, inside, reason, comes_first) if len(inside) > 1 else None
    return edge


def _epoch(best: int, epochs: list[int], final_epoch: int | None):
    if not epochs:
        return None
    if best == epochs[-1] and final_epoch is not None and best < final_epoch:
        values = list(range(best, final_epoch + 1))
        reason = f"the best epoch {best} is the last swept; the trainer saved epochs up to {final_epoch}"
        return "epoch", values, reason, False
    if best == epochs[0] and best > 1:
        values = list(range(1, best + 1))
        return (
            "epoch",
            values,
            f"the best epoch {best} is the first swept; epochs 1-{best - 1} were not",
            False,
        )
    return None


def _beyond_edge(axis: str, best: float, levels: list[float], lowest: float, clamp: bool = False):
    """Up to two steps past the edge the best sits on (the sweep's smallest step), and the best
    itself to pair with; a step below `lowest` is dropped, or with `clamp` taken at `lowest`."""
    if len(levels) < 2 or levels[0] < best < levels[-1]:
        return None
    step = min(b - a for a, b in zip(levels, levels[1:]))
    direction = -1 if best == levels[0] else 1
    beyond = [round(best + direction * k * step, 6) for k in (2, 1)] + [best]
    kept = {max(v, lowest) for v in beyond} if clamp else {v for v in beyond if v >= lowest}
    if len(kept) < 2:
        return None
    side = "lowest" if direction < 0 else "highest"
    return axis, sorted(kept), f"the best {axis} {best:g} is the {side} swept ({_listed(levels)})", False


def _command(overrides: Sequence[str], axis: str, values: list[float]) -> str:
    kept = [_shortened(o) for o in overrides if override_key(o) != axis]
    return " ".join(["python -m bespoke_exp -m", *kept, f"{axis}={_listed(values)}"])


def _shortened(override: str) -> str:
    """`epoch=1,2,3,4,5` as the user typed it: `epoch=1,2,...,5`."""
    key, _, value = override.partition("=")
    parts = value.split(",")
    if len(parts) > 3 and all(p.isdigit() for p in parts):
        return f"{key}={_listed([int(p) for p in parts])}"
    return override


def _listed(values: Sequence[float]) -> str:
    """1,2,...,10 for a run of consecutive integers (the sweep's own shorthand), else a,b,c."""
    if len(values) > 3 and all(float(v).is_integer() for v in values):
        ints = [int(v) for v in values]
        if ints == list(range(ints[0], ints[-1] + 1)):
            return f"{ints[0]},{ints[1]},...,{ints[-1]}"
    return ",".join(f"{float(v):g}" for v in values)
