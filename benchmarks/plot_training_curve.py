"""AP on the val split against training minutes, one line per run, from the trainer's log.csv files.

    python benchmarks/plot_training_curve.py --out benchmarks/training_curve.png RUN/run/log.csv [NAME=LOG ...]

The evaluation rows of each log (iteration, elapsed seconds, AP, AP50) are the points; elapsed time
counts across resumes, so a resumed run is one line.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path


def eval_points(log_csv: Path) -> list[tuple[float, float, float]]:
    """(training minutes, AP %, AP50 %) of every evaluation row, in log order."""
    with open(log_csv, encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r.get("AP")]
    return [(float(r["elapsed_s"]) / 60, 100 * float(r["AP"]), 100 * float(r["AP50"])) for r in rows]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="PNG to write")
    parser.add_argument("logs", nargs="+", help="log.csv, or NAME=log.csv to label the line")
    args = parser.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for item in args.logs:
        name, _, path = item.rpartition("=")
        points = eval_points(Path(path))
        if not points:
            print(f"error: {path} has no evaluation rows", file=sys.stderr)
            return 1
        minutes, ap, ap50 = zip(*points)
        label = name or Path(path).parent.parent.name
        ax.plot(minutes, ap, "o-", label=f"{label}: AP")
        ax.plot(minutes, ap50, "s--", alpha=0.6, label=f"{label}: AP50")
    ax.set_xlabel("training minutes (2-core CPU, 1 thread)")
    ax.set_ylabel("synthetic val AP (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
