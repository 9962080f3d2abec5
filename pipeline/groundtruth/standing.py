"""Where a searched architecture stands on a ground-truth file: the user's question, answered.

Among the file's architectures that fit the search's limits: the best one, the largest (by params,
and by FLOPs: what a user would take without searching) and the pick, with the regret of each
(best minus it). Ties among the largest count as their mean, as in ``correlate``'s regret.
"""
from __future__ import annotations

from typing import Any, Optional

from pipeline.groundtruth.format import Entry
from pipeline.space import ArchSpec, Limits


def standing(entries: list[Entry], pick: ArchSpec, limits: Limits, metric: str) -> dict[str, Any]:
    from pipeline.models.complexity import complexity

    sizes = {e.key: complexity(e.spec) for e in entries}
    fit = [e for e in entries if metric in e.metrics and limits.admits(sizes[e.key][0] / 1e6, sizes[e.key][1] / 1e6)]
    out: dict[str, Any] = {"metric": metric, "n_file": len(entries), "n_fit": len(fit)}
    if not fit:
        return out
    best = max(fit, key=lambda e: e.metrics[metric])

    def largest(index: int) -> tuple[float, list[Entry]]:
        top = max(sizes[e.key][index] for e in fit)
        tied = [e for e in fit if sizes[e.key][index] == top]
        return sum(e.metrics[metric] for e in tied) / len(tied), tied

    by_params, by_flops = largest(0), largest(1)
    mine: Optional[Entry] = next((e for e in fit if e.spec == pick), None)
    ranked = sorted((e.metrics[metric] for e in fit), reverse=True)
    out.update(best=(best.key, best.metrics[metric]), largest_params=by_params[0], largest_flops=by_flops[0],
               largest_params_keys=[e.key for e in by_params[1]], largest_flops_keys=[e.key for e in by_flops[1]])
    if mine is not None:
        value = mine.metrics[metric]
        out.update(pick=value, pick_rank=1 + sum(v > value for v in ranked))
    return out


def standing_lines(s: dict[str, Any], pick: ArchSpec, source: str) -> list[str]:
    """Markdown lines of :func:`standing` for a report."""
    m = s["metric"]
    head = (f"Ground truth: `{source}`, metric `{m}`: {s['n_fit']} of its {s['n_file']} architectures fit the "
            "search's limits.")
    if not s["n_fit"]:
        return [head, ""]
    best = s["best"][1]
    rows = [("best that fits", best), ("largest that fits (params)", s["largest_params"]),
            ("largest that fits (FLOPs)", s["largest_flops"])]
    if "pick" in s:
        rows.insert(1, (f"**the search's pick** (rank {s['pick_rank']} of {s['n_fit']})", s["pick"]))
        verdict = ("better than" if s["pick"] > s["largest_params"] else
                   "as good as" if s["pick"] == s["largest_params"] else "worse than")
        note = (f"The pick is **{verdict}** the largest network that fits by params "
                f"({s['pick'] - s['largest_params']:+.2f} points; regret {best - s['pick']:.2f} against the best).")
    else:
        note = (f"The pick (`{pick.short()}`) is not among the file's architectures, so the file cannot say how it "
                "ranks; build ground truth that includes it, or compare the largest that fits with the retrained "
                "pick's own accuracy above (a different training schedule may make them incomparable).")
    table = ["| | " + m + " | regret |", "|---|---:|---:|"] + [f"| {name} | {v:.2f} | {best - v:.2f} |" for name, v in rows]
    return [head, "", *table, "", note, ""]
