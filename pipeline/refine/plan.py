"""The race's arithmetic, as pure functions: the rung plan, its cost, and who goes on.

**The plan** (successive halving, the bracket of Hyperband / ASHA with the most rungs): rung 1
trains all ``n`` candidates for ``min_epochs``; each next rung keeps ``floor(n_r / eta)`` of them
(at least one) and trains them to ``eta`` times the previous rung's epochs, until the rung that
trains two or more leaves one: the winner. A promoted candidate continues from its checkpoint,
so rung r costs ``n_r x (epochs_r - epochs_{r-1})`` epochs of one candidate and nothing is
trained twice. A ``budget`` (in those epochs) keeps the longest prefix of rungs it pays for; the
last rung kept then names the winner. A budget below rung 1 is refused.

**Promotion.** A rung that keeps several keeps the best ``floor(n_r / eta)`` by the selection
metric (equal accuracies: the smaller network first); the next rung measures them again, after more
training, so a leader is never dropped for being within noise of a smaller network. The rung that
keeps one decides the winner, where no later measurement can: every entrant within ``tie_se``
standard errors of the best one's accuracy on the selection split, ``sqrt(p (1 - p) / n)``, is tied
with it, and the smallest of them (params, then FLOPs) wins -- a difference a redraw of the split
could reverse does not buy a larger network. With ``tie_se = 0`` the winner is the most accurate.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Optional, Sequence, Union

RETRAIN_MULTIPLE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*x\s*$")


@dataclass(frozen=True)
class Rung:
    """One rung of the race.

    Args:
        number: 1, 2, ...
        candidates: networks trained in this rung.
        epochs: epochs each of them has had at the rung's end, where it is evaluated.
        previous: epochs each had before the rung (the previous rung's ``epochs``; 0 for rung 1).
        keep: how many go on to the next rung (1 in the last rung: the winner).
    """

    number: int
    candidates: int
    epochs: int
    previous: int
    keep: int

    @property
    def new_epochs(self) -> int:
        """Epochs each candidate trains in this rung (it continues from its previous rung's checkpoint)."""
        return self.epochs - self.previous

    @property
    def cost(self) -> int:
        """Epochs of one candidate this rung costs in all."""
        return self.candidates * self.new_epochs


def full_plan(n: int, eta: int, min_epochs: int) -> list[Rung]:
    """Successive halving of ``n`` candidates down to one, without a budget."""
    if n < 2 or eta < 2 or min_epochs < 1:
        raise ValueError(f"a race needs n >= 2 candidates, eta >= 2 and min_epochs >= 1 (got {n}, {eta}, {min_epochs})")
    rungs: list[Rung] = []
    alive, epochs, previous = n, min_epochs, 0
    while alive > 1:
        keep = max(1, alive // eta)
        rungs.append(Rung(len(rungs) + 1, alive, epochs, previous, keep))
        alive, previous, epochs = keep, epochs, epochs * eta
    return rungs


def budget_epochs(budget: Union[int, str, None], recipe_epochs: int) -> Optional[int]:
    """A budget in epochs of one candidate: an int as it is, ``"Nx"`` as N full retrains of the recipe
    (``N x recipe_epochs``, rounded down), None for no budget."""
    if budget is None:
        return None
    if isinstance(budget, str):
        m = RETRAIN_MULTIPLE.match(budget)
        if not m:
            raise ValueError(f"budget {budget!r}: give epochs (e.g. 120) or full retrains (e.g. 3x)")
        return int(float(m.group(1)) * recipe_epochs)
    return int(budget)


def rung_plan(n: int, eta: int, min_epochs: int, budget: Optional[int] = None) -> list[Rung]:
    """The rungs the budget (epochs of one candidate; None: unlimited) pays for; ValueError when it does
    not pay for rung 1. Where the budget cuts the race short, the last rung it pays for keeps one."""
    rungs = full_plan(n, eta, min_epochs)
    if budget is None:
        return rungs
    if budget < rungs[0].cost:
        raise ValueError(f"a budget of {budget} epochs is below one rung: rung 1 trains {n} candidates x "
                         f"{min_epochs} epochs = {rungs[0].cost} epochs")
    kept, spent = [], 0
    for rung in rungs:
        if spent + rung.cost > budget:
            break
        kept.append(rung)
        spent += rung.cost
    last = kept[-1]
    kept[-1] = Rung(last.number, last.candidates, last.epochs, last.previous, 1)
    return kept


def plan_cost(rungs: Sequence[Rung]) -> int:
    """Epochs of one candidate the whole race costs."""
    return sum(r.cost for r in rungs)


def schedule_epochs(rungs: Sequence[Rung]) -> int:
    """The epochs every candidate's learning-rate schedule spans: the last rung's (see docs/refine.md)."""
    return rungs[-1].epochs


def plan_table(rungs: Sequence[Rung], recipe_epochs: int) -> list[tuple]:
    """Rows (rung, candidates, epochs each, new epochs each, epochs this rung, cumulative, cumulative in full
    retrains of ``recipe_epochs``, kept) of the plan, as the command prints it."""
    rows, total = [], 0
    for r in rungs:
        total += r.cost
        rows.append((r.number, r.candidates, r.epochs, r.new_epochs, r.cost, total, total / recipe_epochs, r.keep))
    return rows


# --------------------------------------------------------------------------- promotion
@dataclass(frozen=True)
class Result:
    """One candidate's standing at the end of a rung.

    Args:
        candidate: its index in the shortlist.
        top1: selection metric, top-1 accuracy on the selection split in percent.
        params, flops: its size (the tie-break: the smaller network goes on).
    """

    candidate: int
    top1: float
    params: float
    flops: float


def standard_error(top1: float, n: int) -> float:
    """Standard error, in percentage points, of a top-1 accuracy ``top1`` (%) measured on ``n`` images."""
    p = min(max(top1 / 100.0, 0.0), 1.0)
    return 100.0 * math.sqrt(p * (1.0 - p) / max(1, n))


def promote(results: Sequence[Result], keep: int, n_images: int, tie_se: float = 1.0) -> list[int]:
    """The entrants that go on, best first: the ``keep`` most accurate (equal accuracies: the smaller network,
    then the lower index first); when ``keep`` is 1 (the deciding rung), the smallest network (params, then
    FLOPs, then index) within ``tie_se`` standard errors (``standard_error(best, n_images)``) of the best."""
    if keep < 1:
        raise ValueError(f"keep={keep}: at least one entrant goes on")
    ranked = sorted(results, key=lambda r: (-r.top1, r.params, r.flops, r.candidate))
    if keep > 1 or not ranked:
        return [r.candidate for r in ranked[:keep]]
    best = ranked[0]
    margin = tie_se * standard_error(best.top1, n_images)
    tied = [r for r in ranked if r.top1 >= best.top1 - margin - 1e-9]
    return [min(tied, key=lambda r: (r.params, r.flops, r.candidate)).candidate]
