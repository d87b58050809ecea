"""`python -m bench [--quick] [--json PATH] [--only NAME ...] [--check]`: run the benchmarks, print a table, write JSON."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import torch

from bench import cases, common
from bench.cases import CASES

# CI's threshold: these 2-core machines are shared and noisy (a busy neighbour halves a throughput), so only
# a result worse than its goal by more than this factor counts as a regression.
CHECK_SLACK = 2.0


def machine() -> dict:
    return {"python": platform.python_version(), "platform": platform.platform(), "processor": platform.processor(),
            "cpus": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="fewer repeats and smaller workloads, without the full-suite-"
                   "only cases (under two minutes)")
    p.add_argument("--json", type=Path, help="write the results as JSON to this path")
    p.add_argument("--only", nargs="+", choices=sorted(CASES), help="run only these cases")
    p.add_argument("--check", action="store_true",
                   help=f"exit 1 if a result misses its goal by more than {CHECK_SLACK:g}x (CI's regression guard)")
    args = p.parse_args(argv)
    results = []
    try:
        for name, case in CASES.items():
            if args.only and name not in args.only:
                continue
            if args.quick and name in cases.FULL_ONLY and not args.only:
                print(f"skipping {name} (full suite only)", file=sys.stderr, flush=True)
                continue
            print(f"running {name} ...", file=sys.stderr, flush=True)
            results.extend(case(args.quick))
    finally:
        if common.WS is not None:
            common.WS.close()
    rows = [["name", "value", "unit", "reference", "ratio", "goal", "met"]]
    for r in results:
        rows.append([r.name, f"{r.value:.4g}", r.unit, "-" if r.reference is None else f"{r.reference:.4g}",
                     "-" if r.ratio is None else f"{r.ratio:.2f}", r.goal, "yes" if r.met else "NO"])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))
    for r in results:
        if r.note:
            print(f"- {r.name}: {r.note}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": machine(), "quick": args.quick,
                                         "results": [r.to_dict() for r in results]}, indent=2))
    if args.check:
        failed = [r.name for r in results if not cases.judge(r.goal, r.value, r.ratio, CHECK_SLACK)]
        if failed:
            print(f"REGRESSION: {', '.join(failed)} missed the goal by more than {CHECK_SLACK:g}x", file=sys.stderr)
            return 1
        print(f"check passed: every result is within {CHECK_SLACK:g}x of its goal", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
