"""A/B of training recipes, side by side: same seed, same data, same minutes, same machine at once.

    python benchmarks/train_ab.py --out /tmp/ab --minutes 10 \\
        --variant base= \\
        --variant stages3="model.num_stages=3 train.mask_stages=last"

Each variant is `benchmarks/train_synthetic.py` with its `--set` overrides, all started together
with `cores / variants` torch threads each, so a machine's noise hits every variant alike (the
brief's rule: ratios measured side by side). Each run evaluates on the val split at `--evals`
points; OUT/curves.png plots AP against training minutes, OUT/curves.md tabulates the points.
"""

from __future__ import annotations

import argparse
import csv
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def curve(log: Path) -> list[tuple[float, float, float, int]]:
    """(training minutes, AP, AP50, iteration) of each evaluation row of a trainer's log.csv (RUN/run/log.csv)."""
    rows = []
    if not log.is_file():
        return rows
    for r in csv.DictReader(log.open()):
        if r.get("AP"):
            rows.append((float(r["elapsed_s"]) / 60.0, float(r["AP"]), float(r["AP50"]), int(r["iter"])))
    return rows


def plot(
    curves: dict[str, list[tuple[float, float, float, int]]], out: Path, title: str, with_ap50: bool = False
) -> None:
    """AP (and, with `with_ap50`, AP50 dashed) against training minutes, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for name, pts in curves.items():
        if pts:
            line = ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], marker="o", label=f"{name}: AP")[0]
            if with_ap50:
                ax.plot([p[0] for p in pts], [100 * p[2] for p in pts], "s--", color=line.get_color(), alpha=0.6,
                        label=f"{name}: AP50")  # fmt: skip
    ax.set_xlabel("training minutes")
    ax.set_ylabel("val AP")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def table(curves: dict[str, list[tuple[float, float, float, int]]], settings: dict[str, str]) -> str:
    lines = ["| variant | overrides | minutes | iterations | AP | AP50 |", "|---|---|---|---|---|---|"]
    for name, pts in curves.items():
        for minutes, ap, ap50, it in pts:
            overrides = settings[name] or "(recipe)"
            lines.append(f"| {name} | `{overrides}` | {minutes:.1f} | {it} | {100 * ap:.1f} | {100 * ap50:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--minutes", type=float, default=10.0, help="training minutes per variant")
    parser.add_argument("--variant", action="append", required=True, metavar="NAME=OVERRIDES")
    parser.add_argument("--evals", type=int, default=4)
    parser.add_argument("--train-videos", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch threads per run (default cores / variants)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = {}
    for item in args.variant:
        name, _, overrides = item.partition("=")
        settings[name] = overrides.strip()
    threads = args.threads or max(1, (os.cpu_count() or 1) // len(settings))
    data = out / "data"
    common = [sys.executable, str(HERE / "train_synthetic.py"), "--data", str(data), "--no-progress"]
    common += ["--minutes", str(args.minutes), "--evals", str(args.evals), "--threads", str(threads)]
    if args.train_videos:
        common += ["--train-videos", str(args.train_videos)]
    # Make the shared data once, before the clock of any variant starts.
    sys.path.insert(0, str(HERE.parent))
    from efficientvis_trt.train.recipe import Recipe, make_splits

    make_splits(data, Recipe(train_videos=args.train_videos or Recipe.train_videos))
    procs = {}
    for name, overrides in settings.items():
        sets = [a for kv in shlex.split(overrides) for a in ("--set", kv)]
        log = (out / f"{name}.log").open("w")
        procs[name] = subprocess.Popen([*common, "--out", str(out / name), *sets], stdout=log, stderr=subprocess.STDOUT)
        print(f"started {name}: {overrides or '(recipe)'}", flush=True)
    failed = []
    while procs:
        time.sleep(5)
        for name, p in list(procs.items()):
            if p.poll() is not None:
                print(f"{name} finished (exit {p.returncode})", flush=True)
                if p.returncode:
                    failed.append(name)
                del procs[name]
    curves = {name: curve(out / name / "run" / "log.csv") for name in settings}
    plot(curves, out / "curves.png", f"{args.minutes:g} min side by side, {threads} thread(s) each")
    (out / "curves.md").write_text(table(curves, settings))
    print((out / "curves.md").read_text())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
