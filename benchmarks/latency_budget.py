"""What a latency budget buys, on real accuracy: OoD-ViT-NAS AutoFormer-T (1,001 networks, ImageNet top-1).

Every network of the file gets its latency predicted on this CPU by the search's calibrated
predictor (eager PyTorch, batch 1, one thread, the fastest call: the search's defaults). For four
latency budgets, the percentiles ``--budgets`` of those latencies (default: the quartiles 25, 50,
75 and 100), five arms pick one network each:

* ``search``: the search's pick under ``--limits.max_latency_ms`` with the proxy (``--proxy``).
  The search proposes only networks whose predicted latency is within the limit and picks the
  best proxy score among them, so on a file it is the network with the best score among those
  that fit (a simplification: an evolution may not reach that network; the file holds 1,001);
* ``most FLOPs``: the network with the most FLOPs whose predicted latency fits;
* ``most params``: the one with the most parameters that fits;
* ``FLOPs rule``: what a user does without the tool: one reference network (the file's
  median-FLOPs network) measured, the latency budget turned into a FLOPs budget (budget x its
  FLOPs / its latency), the largest-FLOPs network under that; its latency may break the budget
  (or leave accuracy unused), so it is measured too;
* ``best``: the most accurate network of the file whose predicted latency fits (the oracle).

Every pick, and the reference, is then measured ``--remeasure`` times, each in a fresh process
(``python benchmarks/latency_budget.py --measure``, on an otherwise idle machine); the
table gives the median of those and whether it is over the budget.

The proxy (``--proxy``): ``log_flops_kernel`` (default) is ``log FLOPs + w x kernel`` with the
per-network kernel term of the dev study (``benchmarks/results/proxy_scores_dev.csv``, column
``vintk_identity_3seeds``) and ``w = --kernel-weight`` (1.0: the form of ``vintk_flops``), so any
``w`` costs no new proxy computation; any registered proxy name is computed instead with
``pipeline.proxies.compute_proxy`` on the search's probe (the config's photos), each network's
score cached in ``--results/scores_<proxy>.csv`` (resumable; ViNTK proxies take ~15 s per
AutoFormer-T network on one core).

    python benchmarks/latency_budget.py                       # predicted latencies, the table
    python benchmarks/latency_budget.py --measure   # + fresh-process re-measures
    python benchmarks/latency_budget.py --doc docs/latency.md --plot docs/img/latency_budget.png
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.latency.cache import MeasurementCache  # noqa: E402
from pipeline.latency.predictor import LatencyPredictor  # noqa: E402
from pipeline.latency.target import Target, device_name  # noqa: E402
from pipeline.space import SearchSpace  # noqa: E402
from pipeline.utils.io import atomic_write_text  # noqa: E402

START, END = "<!-- latency-budget:start -->", "<!-- latency-budget:end -->"
ARMS = ["search", "most FLOPs", "most params", "FLOPs rule", "best"]
DEV_SCORES = REPO / "benchmarks" / "results" / "proxy_scores_dev.csv"
DEV_TAG, DEV_COLUMN = "ood", "vintk_identity_3seeds"   # the OoD-T rows of the dev study, its kernel-term estimate


def networks(path: Path, space: str) -> list[dict]:
    """The file's networks: key, spec, top-1, FLOPs and params (ours, counted)."""
    from pipeline.groundtruth import load_ground_truth
    from pipeline.models import count_flops, count_params

    return [{"key": e.key, "spec": e.spec, "top1": e.metrics["top1"], "flops": count_flops(e.spec) / 1e6,
             "params": count_params(e.spec) / 1e6} for e in load_ground_truth(path, space=space) if "top1" in e.metrics]


def dev_kernel(keys: list[str]) -> dict[str, float]:
    """The dev study's kernel term per network key of the OoD-T file."""
    kernel = {r["key"]: float(r[DEV_COLUMN]) for r in csv.DictReader(open(DEV_SCORES))
              if r["file"] == DEV_TAG and r[DEV_COLUMN] not in ("", "nan")}
    missing = [k for k in keys if k not in kernel]
    if missing:
        raise SystemExit(f"{DEV_SCORES} has no {DEV_COLUMN} for {len(missing)} network(s) (e.g. {missing[0]}); "
                         "use --proxy NAME to compute a registered proxy")
    return kernel


def computed_scores(nets: list[dict], proxy: str, space: SearchSpace, out: Path) -> dict[str, float]:
    """A registered proxy on every network, each score appended to ``out`` as it is computed."""
    from pipeline.data.probe import probe_batch
    from pipeline.proxies.registry import compute_proxy, get_proxy

    info = get_proxy(proxy)
    if info.population is not None:
        raise SystemExit(f"--proxy {proxy} ranks a population; use a per-network proxy")
    sign = 1.0 if info.higher_is_better else -1.0
    done = {}
    if out.is_file():
        done = {r["key"]: float(r["score"]) for r in csv.DictReader(open(out))}
    images, labels = probe_batch(8, image_size=int(space.fixed.get("img_size", 224)), seed=0, source="photos")
    started = time.time()
    for i, net in enumerate(n for n in nets if n["key"] not in done):
        score = compute_proxy(proxy, net["spec"], images, labels, seed=0)
        value = score.value if score.valid else -math.inf * sign
        new = not out.is_file()
        with open(out, "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["key", "score"])
            w.writerow([net["key"], value])
        done[net["key"]] = value
        print(f"  {proxy} {i + 1}: {net['spec'].short()} {value:.4g} ({time.time() - started:.0f} s)", flush=True)
    return {k: sign * v for k, v in done.items()}


def picks(nets: list[dict], latency: dict[str, float], score: dict[str, float], budget: float,
          reference: dict, reference_ms: float) -> dict[str, dict]:
    """Each arm's network under ``budget`` (ms)."""
    fits = [n for n in nets if latency[n["key"]] <= budget]
    flops_budget = budget * reference["flops"] / reference_ms
    under = [n for n in nets if n["flops"] <= flops_budget] or [min(nets, key=lambda n: n["flops"])]
    return {"search": max(fits, key=lambda n: (score[n["key"]], n["key"])),
            "most FLOPs": max(fits, key=lambda n: (n["flops"], n["key"])),
            "most params": max(fits, key=lambda n: (n["params"], n["key"])),
            "FLOPs rule": max(under, key=lambda n: (n["flops"], n["key"])),
            "best": max(fits, key=lambda n: (n["top1"], n["key"]))}


def measured(log: Path) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    if log.is_file():
        for text in log.read_text().splitlines():
            try:
                row = json.loads(text)
            except json.JSONDecodeError:
                continue   # cut short by an interruption
            out.setdefault(row["key"], []).append(row)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ground-truth", default="ood_vit_nas_tiny", help="a named benchmark or a file")
    ap.add_argument("--space", default="autoformer_tiny")
    ap.add_argument("--proxy", default="log_flops_kernel",
                    help="log_flops_kernel (log FLOPs + w x the dev study's kernel term) or a registered proxy name")
    ap.add_argument("--kernel-weight", type=float, default=1.0, help="w of log_flops_kernel (1: vintk_flops's form)")
    ap.add_argument("--budgets", type=float, nargs="+", default=[25, 50, 75, 100],
                    help="latency budgets as percentiles of the file's predicted latencies")
    ap.add_argument("--measure", action="store_true", help="re-measure the picks in fresh processes (timing: quiet machine)")
    ap.add_argument("--remeasure", type=int, default=3, help="fresh-process measurements of each pick")
    ap.add_argument("--cache", type=Path, default=REPO / "benchmarks" / "results" / "latency" / "cache",
                    help="the predictor's calibration cache (default: the latency benchmark's)")
    ap.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results" / "latency_budget")
    ap.add_argument("--doc", type=Path, default=None, help="rewrite the table between its markers in this file")
    ap.add_argument("--plot", type=Path, default=None, help="latency-accuracy plot with each arm's picks")
    args = ap.parse_args()
    if not all(0 < b <= 100 for b in args.budgets):
        ap.error("--budgets are percentiles in (0, 100]")
    if args.remeasure < 1:
        ap.error("--remeasure must be at least 1")

    from pipeline.benchmark_files import resolve_benchmark

    path = Path(args.ground_truth) if Path(args.ground_truth).is_file() else resolve_benchmark(args.ground_truth)
    space = SearchSpace.load(args.space)
    nets = networks(path, args.space)
    args.results.mkdir(parents=True, exist_ok=True)
    target = Target(device="cpu")   # the search's defaults on this machine: eager, batch 1, 1 thread, fastest call
    cache = MeasurementCache(target, args.cache)
    started = time.time()
    predictor = LatencyPredictor.calibrate(space, target, cache, progress=lambda d, t: print(
        f"  calibration {d}/{t} network runs ({time.time() - started:.0f} s)", flush=True))
    latency = {n["key"]: predictor.predict(n["spec"]) for n in nets}
    if args.proxy == "log_flops_kernel":
        kernel = dev_kernel([n["key"] for n in nets])
        score = {n["key"]: math.log(n["flops"]) + args.kernel_weight * kernel[n["key"]] for n in nets}
        proxy = f"log FLOPs + {args.kernel_weight:g} x kernel (dev study's {DEV_COLUMN})"
    else:
        score = computed_scores(nets, args.proxy, space, args.results / f"scores_{args.proxy}.csv")
        proxy = args.proxy
    reference = sorted(nets, key=lambda n: (n["flops"], n["key"]))[len(nets) // 2]
    ordered = sorted(latency.values())
    budgets = [ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))] for p in args.budgets]

    log = args.results / "measurements.jsonl"
    have = measured(log)

    def fresh_ms(net: dict) -> float:
        rows = have.get(net["key"], [])
        return statistics.median(r["min_ms"] for r in rows) if rows else math.nan

    if args.measure:   # the reference first (the FLOPs rule needs its latency), then every pick, round-robin
        from pipeline.latency.fresh import measure_in_fresh_process

        def measure(net: dict, why: str) -> None:
            got = measure_in_fresh_process(net["spec"], target, memory=False)["timing"]
            row = {"key": net["key"], "arch": net["spec"].short(), "why": why, "min_ms": got["min_ms"],
                   "median_ms": got["ms"], "date": time.strftime("%F %T")}
            with open(log, "a") as f:
                f.write(json.dumps(row) + "\n")
            have.setdefault(net["key"], []).append(row)
            print(f"  {why}: {net['spec'].short()} {row['min_ms']:.1f} ms ({time.time() - started:.0f} s)", flush=True)

        for _ in range(args.remeasure - len(have.get(reference["key"], []))):
            measure(reference, "reference")
    reference_ms, reference_how = fresh_ms(reference), "measured"
    if math.isnan(reference_ms):   # not measured yet: the predictor stands in, said so in the output
        reference_ms, reference_how = latency[reference["key"]], "predicted: not measured yet"
        print("the reference network is not measured yet (--measure); its predicted latency stands in")
    chosen = {b: picks(nets, latency, score, b, reference, reference_ms) for b in budgets}
    if args.measure:
        unique = list({n["key"]: n for arms in chosen.values() for n in arms.values()}.values())
        for round_ in range(args.remeasure):
            for net in unique:
                if len(have.get(net["key"], [])) <= round_:
                    measure(net, "pick")

    rows = []
    for p, b in zip(args.budgets, budgets):
        flops_budget = b * reference["flops"] / reference_ms
        for arm in ARMS:
            n = chosen[b][arm]
            ms = fresh_ms(n)
            rows.append({"percentile": p, "budget_ms": b, "flops_budget_m": flops_budget, "arm": arm, "key": n["key"],
                         "arch": n["spec"].short(), "top1": n["top1"], "flops_m": n["flops"], "params_m": n["params"],
                         "predicted_ms": latency[n["key"]], "measured_ms": ms,
                         "fits": bool(ms <= b) if not math.isnan(ms) else None,
                         "regret": chosen[b]["best"]["top1"] - n["top1"]})
    summary = {"proxy": proxy, "file": path.name, "networks": len(nets), "reference": reference["spec"].short(),
               "reference_flops_m": reference["flops"], "reference_ms": reference_ms, "reference_how": reference_how,
               "device": device_name("cpu"), "rows": rows}
    atomic_write_text(args.results / "summary.json", json.dumps(summary, indent=1))
    text = table(summary)
    print(text)
    if args.doc is not None:
        doc = args.doc.read_text()
        if START in doc and END in doc:
            atomic_write_text(args.doc, doc[: doc.index(START)] + START + "\n" + text + "\n" + END + doc[doc.index(END) + len(END):])
        else:
            print(f"{args.doc} has no {START} ... {END} markers")
    if args.plot is not None:
        plot(nets, latency, summary, budgets, args.plot)
    return 0


def table(summary: dict) -> str:
    rows = summary["rows"]
    lines = [f"{summary['networks']} networks of `{summary['file']}` (ImageNet top-1 of the supernet's weights), "
             f"latency predicted on {summary['device']} (eager, batch 1, 1 thread, fastest call), each pick "
             f"measured in fresh processes (median of 3). Search proxy: {summary['proxy']}. FLOPs rule: "
             f"reference {summary['reference']} ({summary['reference_flops_m']:.0f} MFLOPs, "
             f"{summary['reference_ms']:.1f} ms {summary['reference_how']}). `python benchmarks/latency_budget.py`.", "",
             "| budget (percentile) | arm | top-1 | regret | picked | MFLOPs | params (M) | predicted ms | measured ms | within budget |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        budget = f"{r['budget_ms']:.1f} ms (p{r['percentile']:g})"
        if r["arm"] == "FLOPs rule":
            budget += f", {r['flops_budget_m']:.0f} MFLOPs"
        fits = {True: "yes", False: "**no**", None: "-"}[r["fits"]]
        measured_ms = f"{r['measured_ms']:.1f}" if not math.isnan(r["measured_ms"]) else "-"
        lines.append(f"| {budget} | {r['arm']} | {r['top1']:.2f} | {r['regret']:.2f} | {r['arch']} | {r['flops_m']:.0f} | "
                     f"{r['params_m']:.2f} | {r['predicted_ms']:.1f} | {measured_ms} | {fits} |")
    return "\n".join(lines)


def plot(nets: list[dict], latency: dict[str, float], summary: dict, budgets: list[float], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    ax.scatter([latency[n["key"]] for n in nets], [n["top1"] for n in nets], s=6, c="0.75", label="file (predicted latency)")
    markers = {"search": ("o", "tab:blue"), "most FLOPs": ("s", "tab:orange"), "most params": ("D", "tab:green"),
               "FLOPs rule": ("X", "tab:red"), "best": ("*", "gold")}
    for arm in ARMS:
        rows = [r for r in summary["rows"] if r["arm"] == arm]
        xs = [r["measured_ms"] if not math.isnan(r["measured_ms"]) else r["predicted_ms"] for r in rows]
        marker, colour = markers[arm]
        ax.scatter(xs, [r["top1"] for r in rows], marker=marker, c=colour, s=70 if arm == "best" else 40,
                   edgecolors="k", linewidths=0.5, label=f"{arm} (measured latency)", zorder=3)
    for b in budgets:
        ax.axvline(b, color="0.4", lw=0.8, ls="--")
    ax.set_xlabel("latency per image (ms; eager, batch 1, 1 thread, fastest call)")
    ax.set_ylabel("ImageNet top-1 (%)")
    ax.set_title("AutoFormer-T (OoD-ViT-NAS): what a latency budget buys (budgets dashed)")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
