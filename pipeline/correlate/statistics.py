"""Statistics of a correlate run: ranking statistics per (metric, proxy) and the regret of each
proxy's top pick under params budgets."""
from __future__ import annotations

import math
from typing import Any, Optional

from pipeline.correlate.plan import Plan
from pipeline.correlate.scores import Row


def _sizes(plan: Plan) -> dict[str, tuple[float, float]]:
    """(params, FLOPs) in millions per architecture key, our exact count."""
    from pipeline.models.complexity import complexity

    return {e.key: tuple(v / 1e6 for v in complexity(e.spec)) for e in plan.entries}


def summarize_scores(plan: Plan, rows: dict[tuple[str, str], Row],
                     regrets: Optional[dict[tuple[str, str], float]] = None) -> list[dict[str, Any]]:
    """One statistics row per (metric, proxy), metric-major; ``regrets`` (:func:`mean_regret`) adds
    each one's mean regret over the budgets."""
    from pipeline.metrics import summarize

    params = {k: p for k, (p, _) in _sizes(plan).items()}
    frac = float(plan.cfg["top_fraction"])
    out = []
    for metric in plan.metrics:
        for proxy in plan.proxies:
            present = [(e, rows[(e.key, proxy)]) for e in plan.entries if (e.key, proxy) in rows]
            valid = [(e, r) for e, r in present if r.valid and math.isfinite(r.value)]
            hib = plan.higher_is_better[proxy]
            truth = [e.metrics[metric] for e, _ in valid]
            stats = summarize([r.value for _, r in valid], truth, [params[e.key] for e, _ in valid],
                              higher_is_better=hib, bands=plan.cfg["bands"], fraction=frac)
            out.append({
                "metric": metric,
                "proxy": proxy,
                "direction": "higher" if hib else "lower",
                "n_valid": len(valid),
                "n_invalid": len(present) - len(valid),
                "n_missing": len(plan.entries) - len(present),
                "kendall_tau": stats["kendall_tau"],
                "spearman_rho": stats["spearman_rho"],
                "band_tau": stats["band_tau"],
                "top_precision": stats["top_precision"],
                "mean_regret": (regrets or {}).get((metric, proxy), math.nan),
                "mean_seconds": (sum(r.seconds for _, r in present) / len(present)) if present else math.nan,
                "_points": ([r.value for _, r in valid], truth),
            })
    return out


def top_pick(score: Any, truth: Any, allowed: Any) -> tuple[float, list[int]]:
    """Mean ``truth`` of the allowed items with the largest finite ``score``, and their indices.

    Tied items count as their mean: the expected value of picking one of them at random.
    """
    import numpy as np

    score, truth, allowed = np.asarray(score, dtype=float), np.asarray(truth, dtype=float), np.asarray(allowed)
    ok = allowed & np.isfinite(score)
    if not ok.any():
        return math.nan, []
    idx = np.flatnonzero(ok & (score == score[ok].max()))
    return float(truth[idx].mean()), idx.tolist()


# The regret table's baselines: among the architectures within the params budget, simply take the
# one with the most parameters, or the one with the most FLOPs (our count, as the search's limits).
LARGEST_PARAMS, LARGEST_FLOPS = "largest_params", "largest_flops"
BASELINES = (LARGEST_PARAMS, LARGEST_FLOPS)


def regret_table(plan: Plan, rows: dict[tuple[str, str], Row]) -> list[dict[str, Any]]:
    """Per metric, params budget and proxy (then both baselines): the true metric of the top pick
    among the architectures within the budget, the best there, and regret = best - pick."""
    import numpy as np

    from pipeline.metrics import orient

    keys = [e.key for e in plan.entries]
    sizes = _sizes(plan)
    params = np.array([sizes[k][0] for k in keys])
    scores = {}
    for proxy in plan.proxies:
        raw = [rows[(k, proxy)] if (k, proxy) in rows else None for k in keys]
        values = [r.value if r is not None and r.valid else math.nan for r in raw]
        scores[proxy] = orient(values, plan.higher_is_better[proxy])
    scores[LARGEST_PARAMS] = params
    scores[LARGEST_FLOPS] = np.array([sizes[k][1] for k in keys])
    out = []
    for metric in plan.metrics:
        truth = np.array([e.metrics[metric] for e in plan.entries])
        for budget in plan.budgets:
            under = params <= budget
            best, best_idx = top_pick(truth, truth, under)
            for name in [*plan.proxies, *BASELINES]:
                pick, idx = top_pick(scores[name], truth, under)
                out.append({
                    "metric": metric, "budget_m": budget, "n_under": int(under.sum()), "proxy": name,
                    "n_scored": int((under & np.isfinite(scores[name])).sum()),
                    "pick_keys": " ".join(keys[i] for i in idx),
                    "pick_params_m": float(params[idx].mean()) if idx else math.nan,
                    "pick_metric": pick, "best_metric": best,
                    "best_keys": " ".join(keys[i] for i in best_idx),
                    "regret": best - pick,
                })
    return out


def mean_regret(regret: list[dict[str, Any]]) -> dict[tuple[str, str], float]:
    """Mean regret per (metric, proxy) over the budgets, and per ("all", proxy) over budgets and metrics
    (nan where a budget had no pick)."""
    import numpy as np

    groups: dict[tuple[str, str], list[float]] = {}
    for r in regret:
        groups.setdefault((r["metric"], r["proxy"]), []).append(r["regret"])
        groups.setdefault(("all", r["proxy"]), []).append(r["regret"])
    return {k: float(np.mean(v)) for k, v in groups.items()}
