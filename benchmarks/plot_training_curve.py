"""AP on the val split against training minutes, one line per run, from the trainer's log.csv files.

    python benchmarks/plot_training_curve.py --out benchmarks/training_curve.png RUN/run/log.csv [NAME=LOG ...]

For runs made apart (benchmarks/train_ab.py plots the runs it starts itself, with the same `curve` and
`plot`). The evaluation rows of each log are the points; elapsed time counts across resumes, so a
resumed run is one line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_ab import curve, plot


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="PNG to write")
    parser.add_argument("logs", nargs="+", help="log.csv, or NAME=log.csv to label the line")
    args = parser.parse_args(argv)
    curves = {}
    for item in args.logs:
        name, _, path = item.rpartition("=")
        if not (points := curve(Path(path))):
            print(f"error: {path} has no evaluation rows", file=sys.stderr)
            return 1
        curves[name or Path(path).parent.parent.name] = points
    plot(curves, Path(args.out), "synthetic val, 2-core CPU, 1 thread per run", with_ap50=True)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
