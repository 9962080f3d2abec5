"""Where a training step's time goes: ours inside ``Trainer.fit`` against the bare loop, by phase and operator.

``benchmarks/train_speed.py`` says how fast ours trains against a bare PyTorch loop; this script
says where a difference comes from. It profiles ``--steps`` training steps of each side with
``torch.profiler`` (CPU operators, after the benchmark's warm-up; the sides alternate, ``--rounds``
times) and gives, in ms per step:

* **phases**: every recorded event's own time (outside its children) goes to the phase of its
  nearest labelled ancestor. Lightning's loop is labelled by a Lightning profiler that opens a
  ``record_function`` range per hook and loop action, plus a few loop internals this script wraps
  (logger connector, ``advance``); the bare loop's parts are labelled by the benchmark's own loop;
  both sides' network forward, loss and Mixup/CutMix are wrapped here alike;
* **operators**: the operators whose own time differs most between the sides, with their calls
  per step (the counts are exact, the times move with the machine by a few percent);
* **Lightning's Python**: the ranges of Lightning's loop with their time outside any operator.

``--overhead`` instead times (no profiler) Lightning's fixed cost per step on a network so small
that the loop is all there is: the `train --task cls` Trainer with our module and datamodule
against the bare loop, same tiny network and in-memory batches, interleaved pairs, the per-pair
difference with its 90% bootstrap interval.

    python benchmarks/train_profile.py --write                # AutoFormer-T, ImageNet recipe
    python benchmarks/train_profile.py --case demo --write
    python benchmarks/train_profile.py --case tiny --write    # the loop alone, profiled
    python benchmarks/train_profile.py --overhead --write     # the loop alone, timed

``--write`` puts the tables between ``<!-- train_profile:CASE -->`` markers in docs/train_speed.md
(appending them the first time); without it they go to stdout only.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import inspect
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import torch
from lightning.pytorch.profilers import Profiler

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_speed as bench  # noqa: E402  (adds the repository to sys.path, after PYTHONPATH)
from paired_ratio import bootstrap_mean  # noqa: E402
from pipeline.space import ArchSpec  # noqa: E402

DOC = bench.REPO / "docs" / "train_speed.md"

# Phases, each the labels that open it; an event belongs to the phase of its nearest labelled
# ancestor (itself included). Lightning's labels are "[Kind]Name.hook" (trainer/call.py).
PHASES: list[tuple[str, Callable[[str], bool]]] = [
    ("data: next batch (DataLoader hand-off)", lambda n: n.startswith("enumerate(DataLoader)")
        or n.endswith("train_dataloader_next") or n == "bare: to device"),
    ("data: to device, batch hooks", lambda n: n.endswith(("batch_to_device", "transfer_batch_to_device",
                                                           "on_before_batch_transfer", "on_after_batch_transfer"))),
    ("Mixup/CutMix", lambda n: n == "Mixup/CutMix"),
    ("network forward", lambda n: n == "network forward"),
    ("loss", lambda n: n == "loss"),
    ("backward", lambda n: n.endswith(".backward") or n == "bare: backward"),
    ("zero_grad(set_to_none=True)", lambda n: "zero_grad" in n),
    ("optimizer step", lambda n: n.startswith("Optimizer.step#") or n.endswith(".optimizer_step")
        or n == "bare: optimizer step"),
    ("LR schedule", lambda n: "lr_scheduler" in n or n == "bare: schedule"),
    ("our training_step (loss mean metric, self.log, finite-loss flag)", lambda n: n.endswith(".training_step")),
    ("our on_train_batch_end (finite-loss check)", lambda n: n.startswith("[LightningModule]")
        and n.endswith(".on_train_batch_end")),
    ("progress bar", lambda n: n.startswith("[Callback]Throttled")),
    ("other callbacks (LR monitor, checkpoint, RNG state, timer)", lambda n: n.startswith("[Callback]")),
    ("logging (logger connector, CSV logger)", lambda n: n.startswith("[_LoggerConnector]")
        or n.endswith("_save_loggers_on_train_batch_end")),
    ("Lightning loop, the rest (advance, closure, hooks)", lambda n: n.startswith(("[", "run_training_batch"))),
]
OUTSIDE = "outside every range (loop top level)"


class RangeProfiler(Profiler):
    """A Lightning profiler that opens a ``torch.profiler.record_function`` range per action."""

    def __init__(self) -> None:
        super().__init__()
        self._open: dict[str, list] = defaultdict(list)

    def start(self, action_name: str) -> None:
        ctx = torch.profiler.record_function(action_name)
        ctx.__enter__()
        self._open[action_name].append(ctx)

    def stop(self, action_name: str) -> None:
        if self._open.get(action_name):
            self._open[action_name].pop().__exit__(None, None, None)


def labelled(fn: Callable, name: str) -> Callable:
    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any):
        with torch.profiler.record_function(name):
            return fn(*args, **kwargs)

    return call


@contextlib.contextmanager
def patched(cls: type, attr: str, wrap: Callable[[Callable], Callable]):
    """``cls.attr`` replaced by ``wrap(cls.attr)`` (a static method stays one) for the duration."""
    original = inspect.getattr_static(cls, attr)
    new = wrap(getattr(cls, attr))
    setattr(cls, attr, staticmethod(new) if isinstance(original, staticmethod) else new)
    try:
        yield
    finally:
        setattr(cls, attr, original)


class Window:
    """Profiles (and times) the steps ``warmup + 1`` to ``warmup + steps``: started after ``warmup``
    steps are done, stopped after ``warmup + steps``."""

    def __init__(self, warmup: int, steps: int) -> None:
        self.warmup, self.steps, self.done = warmup, steps, 0
        self.profile = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
        self.seconds = None

    def step_done(self) -> None:
        self.done += 1
        if self.done == self.warmup:
            self.profile.start()
            self._t0 = time.perf_counter()
        elif self.done == self.warmup + self.steps:
            self.seconds = time.perf_counter() - self._t0
            self.profile.stop()


class BareWindow(bench.StepTimer):
    """The bare loop's step timer, profiling its window."""

    def __init__(self, window: Window, batch: int) -> None:
        super().__init__(window.warmup, window.steps, batch, "cpu")
        self.window = window

    def step_end(self) -> None:
        super().step_end()
        self.window.step_done()


def label_network(module) -> None:
    """Label a ClassificationModule's network forward and training loss (instance attributes named
    ``forward``, which ``nn.Module.__call__`` calls) and its Mixup/CutMix."""
    module.net.forward = labelled(module.net.forward, "network forward")
    module.train_loss_fn.forward = labelled(module.train_loss_fn.forward, "loss")
    if module.mixup_fn is not None:
        module.mixup_fn = labelled(module.mixup_fn, "Mixup/CutMix")


def labelled_modules(cls):
    """``ClassificationTask.module`` patched to label what it builds (both sides build through it)."""
    def wrap(build):
        def module(*args, **kwargs):
            m = build(*args, **kwargs)
            label_network(m)
            return m
        return module

    return patched(cls, "module", wrap)


# ------------------------------------------------------------------------------ the runs
def profile_ours(s: dict[str, Any]) -> tuple[Window, Any]:
    """One run of ours; the profiled window starts before step ``warmup + 1``'s ``advance`` (so every
    Lightning range in it is whole) and stops before the next ``advance``, hence one step more."""
    from lightning.pytorch.loops.training_epoch_loop import _TrainingEpochLoop
    from lightning.pytorch.trainer.connectors.logger_connector.logger_connector import _LoggerConnector

    from pipeline.classification.task import ClassificationTask

    window = Window(s["warmup"], s["steps"])

    def advance(fn):
        def run(loop, *args, **kwargs):
            done = loop.batch_progress.current.completed   # steps done before this one
            if done in (window.warmup, window.warmup + window.steps):
                window.done = done - 1
                window.step_done()
            with torch.profiler.record_function("[_TrainingEpochLoop].advance"):
                return fn(loop, *args, **kwargs)
        return run

    with contextlib.ExitStack() as stack:
        stack.enter_context(labelled_modules(ClassificationTask))
        stack.enter_context(patched(_TrainingEpochLoop, "advance", advance))
        for name in ("on_advance_end", "_save_loggers_on_train_batch_end", "update_lr_schedulers"):
            stack.enter_context(patched(_TrainingEpochLoop, name,
                                        lambda fn, name=name: labelled(fn, f"[_TrainingEpochLoop].{name}")))
        for name in ("on_batch_start", "on_batch_end", "update_train_step_metrics"):
            stack.enter_context(patched(_LoggerConnector, name,
                                        lambda fn, name=name: labelled(fn, f"[_LoggerConnector].{name}")))
        plus_one = dict(s, steps=s["steps"] + 1)   # a next advance to stop before
        bench.run_ours_cls(plus_one, profiler=RangeProfiler())
    return window, window.profile


def profile_bare(s: dict[str, Any]) -> tuple[Window, Any]:
    from pipeline.classification.task import ClassificationTask

    window = Window(s["warmup"], s["steps"])
    with labelled_modules(ClassificationTask):
        bench.run_reference_cls(s, timer=BareWindow(window, s["dm"].batch_size),
                                section=lambda name: torch.profiler.record_function(name))
    return window, window.profile


# ----------------------------------------------------------------------------- the tables
def phase_of(event) -> str:
    e = event
    while e is not None:
        for phase, match in PHASES:
            if match(e.name):
                return phase
        e = e.cpu_parent
    return OUTSIDE


def per_step(window: Window, prof) -> dict[str, Any]:
    """ms per step by phase and by operator (own time), calls per operator, Lightning ranges' own time."""
    n = window.steps
    phases: dict[str, float] = defaultdict(float)
    ops: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    ranges: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for e in prof.events():
        ms = e.self_cpu_time_total / 1e3 / n
        phases[phase_of(e)] += ms
        table = ranges if e.is_user_annotation else ops
        table[e.name][0] += ms
        table[e.name][1] += 1 / n
    wall = window.seconds * 1e3 / n
    phases[OUTSIDE] += wall - sum(phases.values())
    return dict(wall=wall, phases=dict(phases), ops=dict(ops), ranges=dict(ranges))


def averaged(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The mean over rounds of every per-step number (a key missing in a round counts 0)."""
    def mean_of(key: str) -> dict:
        names = set().union(*(r[key] for r in runs))
        if key == "phases":
            return {k: statistics.fmean(r[key].get(k, 0.0) for r in runs) for k in names}
        return {k: [statistics.fmean(r[key].get(k, [0.0, 0.0])[i] for r in runs) for i in (0, 1)] for k in names}

    return dict(wall=statistics.fmean(r["wall"] for r in runs), walls=[r["wall"] for r in runs],
                phases=mean_of("phases"), phase_rounds=[r["phases"] for r in runs], ops=mean_of("ops"),
                ranges=mean_of("ranges"))


def tables(title: str, ours: dict[str, Any], bare: dict[str, Any], top: int) -> str:
    lines = [f"### {title}", ""]
    walls = lambda r: ", ".join(f"{w:.0f}" for w in r["walls"])  # noqa: E731
    lines += [f"Wall time per step under the profiler: ours {ours['wall']:.1f} ms (rounds: {walls(ours)}), "
              f"bare loop {bare['wall']:.1f} ms ({walls(bare)}); ours - bare = {ours['wall'] - bare['wall']:+.1f} ms "
              f"({ours['wall'] / bare['wall'] - 1:+.1%}).", ""]
    lines += ["By phase (own time of every event in the phase, ms per step; phases over 50 ms with each "
              "round's value in brackets):", "",
              "| phase | ours | bare loop | ours - bare |", "|---|---:|---:|---:|"]

    def cell(r: dict[str, Any], phase: str) -> str:
        value = r["phases"].get(phase, 0.0)
        rounds = [x.get(phase, 0.0) for x in r["phase_rounds"]]
        return f"{value:.1f}" + (f" ({', '.join(f'{x:.0f}' for x in rounds)})" if len(rounds) > 1 and value >= 50
                                 else "")

    for phase in [p for p, _ in PHASES] + [OUTSIDE]:
        a, b = ours["phases"].get(phase, 0.0), bare["phases"].get(phase, 0.0)
        if abs(a) >= 0.05 or abs(b) >= 0.05:
            lines.append(f"| {phase} | {cell(ours, phase)} | {cell(bare, phase)} | {a - b:+.1f} |")
    lines.append(f"| **step** | **{ours['wall']:.1f}** | **{bare['wall']:.1f}** | "
                 f"**{ours['wall'] - bare['wall']:+.1f}** |")
    names = set(ours["ops"]) | set(bare["ops"])
    diff = {k: ours["ops"].get(k, [0, 0])[0] - bare["ops"].get(k, [0, 0])[0] for k in names}
    count_diff = [k for k in names if abs(ours["ops"].get(k, [0, 0])[1] - bare["ops"].get(k, [0, 0])[1]) > 1e-9]
    total = lambda r: sum(v[0] for v in r["ops"].values())  # noqa: E731
    lines += ["", f"Operators with the largest difference in own time (top {top} by |ours - bare|; "
              f"{len(count_diff)} of {len(names)} operators are called a different number of times):", "",
              "| operator | ours ms | bare ms | ours - bare | calls/step ours | calls/step bare |",
              "|---|---:|---:|---:|---:|---:|"]
    for k in sorted(names, key=lambda k: -abs(diff[k]))[:top]:
        a, b = ours["ops"].get(k, [0.0, 0.0]), bare["ops"].get(k, [0.0, 0.0])
        lines.append(f"| `{k}` | {a[0]:.1f} | {b[0]:.1f} | {diff[k]:+.1f} | {a[1]:g} | {b[1]:g} |")
    lines.append(f"| **all operators** | **{total(ours):.1f}** | **{total(bare):.1f}** | "
                 f"**{total(ours) - total(bare):+.1f}** | | |")
    calls = lambda r, k: r["ops"].get(k, [0.0, 0.0])[1]  # noqa: E731
    extra = sorted(count_diff, key=lambda k: (-(calls(ours, k) - calls(bare, k)), k))
    lines += ["", "Calls per step that differ (ours / bare): " + (", ".join(
        f"`{k}` {calls(ours, k):g} / {calls(bare, k):g}" for k in extra) or "none") + "."]
    rng = sorted(ours["ranges"].items(), key=lambda kv: -kv[1][0])
    python = sum(v[0] for v in ours["ranges"].values())
    lines += ["", f"Lightning's loop, Python side: ranges of ours by own time outside any operator "
              f"(top {top}; all ranges together {python:.1f} ms per step, the bare loop's "
              f"{sum(v[0] for v in bare['ranges'].values()):.1f} ms):", "",
              "| range | ms per step | calls per step |", "|---|---:|---:|"]
    lines += [f"| `{k}` | {v[0]:.2f} | {v[1]:g} |" for k, v in rng[:top]]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- the cases
class SyntheticTensors(torch.utils.data.Dataset):
    """Ready-made image tensors: a loader that costs next to nothing, for the tiny case."""

    def __init__(self, length: int, image_size: int, num_classes: int = 10) -> None:
        g = torch.Generator().manual_seed(0)
        self.images = torch.randn(64, 3, image_size, image_size, generator=g)
        self.labels = torch.randint(0, num_classes, (length,), generator=g).tolist()
        self.classes = [f"c{i}" for i in range(num_classes)]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.images[i % len(self.images)], self.labels[i]


def tiny_setup(steps: int) -> dict[str, Any]:
    """The demo recipe on a one-block ViT of width 32 and in-memory 32x32 tensors."""
    from pipeline.classification.task import ClassificationTask

    s = bench.cls_setup("demo", "cpu", quick=True, extra=[])
    spec = ArchSpec(family="vit", embed_dim=32, num_heads=(2,), mlp_ratio=(2.0,), img_size=32, patch_size=8,
                    num_classes=10)
    dm = ClassificationTask.datamodule(s["cfg"], spec)
    dm.train_set = SyntheticTensors((s["warmup"] + steps + 2) * dm.batch_size, spec.img_size)
    dm.val_set = SyntheticTensors(dm.batch_size, spec.img_size)
    return dict(s, spec=spec, dm=dm, steps=steps)


def setup(case: str, steps: int) -> dict[str, Any]:
    if case == "tiny":
        return tiny_setup(steps)
    s = bench.cls_setup(case, "cpu", quick=True, extra=[])
    return dict(s, steps=steps)


def profile_case(case: str, steps: int, rounds: int, top: int) -> str:
    s = setup(case, steps)
    runs: dict[str, list] = {"ours": [], "bare": []}
    for r in range(rounds):
        for side in (("ours", "bare") if r % 2 == 0 else ("bare", "ours")):
            with bench.warnings_quiet():
                window, prof = (profile_ours if side == "ours" else profile_bare)(s)
            runs[side].append(per_step(window, prof))
            print(f"  round {r + 1} {side}: {runs[side][-1]['wall']:.1f} ms per step", flush=True)
    cfg = s["cfg"]
    title = (f"cls {case}: {s['spec'].short()}, batch {s['dm'].batch_size}, {cfg['trainer']['precision']}, "
             f"{steps} steps after {s['warmup']} warm-up, {rounds} rounds per side (torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads)")
    return tables(title, averaged(runs["ours"]), averaged(runs["bare"]), top)


def minimal_step(module):
    """The module with the bare loop's training step: Mixup/CutMix, forward and loss only (no loss
    metric, no ``self.log``, no finite-loss flag or check)."""
    def training_step(batch, batch_idx):
        x, y = batch
        if module.mixup_fn is not None:
            x, y = module.mixup_fn(x, y)
        return module.train_loss_fn(module(x), y)

    module.training_step = training_step
    module.on_train_batch_end = lambda *args: None
    return module


def run_plain_lightning(s: dict[str, Any], timer: bench.StepTimer, minimal: bool = False) -> float:
    """Our module (``minimal``: with the bare loop's step) in a Trainer with nothing of ours around it:
    no logger, checkpoint or progress bar."""
    import copy

    from lightning.pytorch import Trainer

    from pipeline.classification.task import ClassificationTask

    cfg, dm = copy.deepcopy(s["cfg"]), s["dm"]
    module = ClassificationTask.module(cfg, s["spec"], dm.batch_size, dm.check())
    if minimal:
        module = minimal_step(module)
    trainer = Trainer(accelerator="cpu", devices=1, max_epochs=1, limit_train_batches=s["warmup"] + s["steps"],
                      limit_val_batches=0, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False,
                      callbacks=[bench.lightning_timer_callback(timer)])
    with bench.warnings_quiet():
        trainer.fit(module, datamodule=dm)
    return timer.images_per_s


def overhead(steps: int, pairs: int) -> str:
    """Lightning's per-step cost on the tiny network, one thread: each Trainer minus the bare loop in
    wall and in CPU time (the process's, which waiting for a core on a loaded machine does not lengthen)."""
    import copy

    s = tiny_setup(steps)
    no_bar = dict(s, cfg=copy.deepcopy(s["cfg"]))
    no_bar["cfg"]["trainer"]["enable_progress_bar"] = False
    sides = {"bare loop": lambda t: bench.run_reference_cls(s, timer=t),
             "plain Trainer (no logger, checkpoints, progress bar), the bare loop's training step":
                 lambda t: run_plain_lightning(s, t, minimal=True),
             "plain Trainer, our module": lambda t: run_plain_lightning(s, t),
             "the `train` Trainer without its progress bar": lambda t: bench.run_ours_cls(no_bar, timer=t),
             "the `train` Trainer (ours)": lambda t: bench.run_ours_cls(s, timer=t)}
    batch = s["dm"].batch_size

    def measure(run):
        def once():
            timer = bench.StepTimer(s["warmup"], steps, batch, "cpu")
            run(timer)
            return (timer.end - timer.start) * 1e3 / steps, timer.cpu_ms_per_step
        return once

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        res = bench.interleaved({k: measure(run) for k, run in sides.items()}, pairs)
    finally:
        torch.set_num_threads(threads)
    lines = ["### Lightning's own cost per step, timed", "",
             f"{s['spec'].short()} on in-memory 32x32 tensors (the loop is nearly all there is), batch {batch}, "
             f"one thread, {steps} steps after {s['warmup']} warm-up, {pairs} interleaved runs of each, no profiler "
             f"(torch {torch.__version__}). Per step: medians over the runs, and the mean per-run difference from "
             "the bare loop with its 90% bootstrap interval; CPU time is the process's (all its threads):", "",
             "| loop | wall ms | minus bare | CPU ms | minus bare |", "|---|---:|---:|---:|---:|"]
    bare = res["bare loop"]
    for name, values in res.items():
        cells = []
        for i in (0, 1):
            cells.append(f"{statistics.median(v[i] for v in values):.2f}")
            if name == "bare loop":
                cells.append("")
            else:
                mean, lo, hi = bootstrap_mean([a[i] - b[i] for a, b in zip(values, bare)])
                cells.append(f"{mean:+.2f} [{lo:+.2f}, {hi:+.2f}]")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write(key: str, text: str) -> None:
    begin, end = f"<!-- train_profile:{key} -->", f"<!-- /train_profile:{key} -->"
    doc = DOC.read_text() if DOC.exists() else "# Retraining speed\n"
    block = f"{begin}\n{text}{end}"
    if begin in doc and end in doc:
        doc = doc[:doc.index(begin)] + block + doc[doc.index(end) + len(end):]
    else:
        doc = doc.rstrip("\n") + "\n\n" + block + "\n"
    DOC.write_text(doc)
    print(f"wrote {DOC} ({key})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", choices=("autoformer-t", "demo", "tiny"), default="autoformer-t")
    ap.add_argument("--steps", type=int, default=None, help="profiled steps per run (autoformer-t 3, demo 20, "
                    "tiny 100; --overhead: timed steps, 200)")
    ap.add_argument("--rounds", type=int, default=2, help="runs per side, alternating")
    ap.add_argument("--top", type=int, default=12, help="rows of the operator and range tables")
    ap.add_argument("--overhead", action="store_true", help="time the loop alone on the tiny network instead")
    ap.add_argument("--pairs", type=int, default=10, help="--overhead: interleaved pairs")
    ap.add_argument("--write", action="store_true", help="into docs/train_speed.md")
    args = ap.parse_args()
    torch.manual_seed(0)
    if args.overhead:
        key, text = "overhead", overhead(args.steps or 200, args.pairs)
    else:
        steps = args.steps or {"autoformer-t": 3, "demo": 20, "tiny": 100}[args.case]
        key, text = args.case, profile_case(args.case, steps, args.rounds, args.top)
    print(text)
    if args.write:
        write(key, text)


if __name__ == "__main__":
    main()
