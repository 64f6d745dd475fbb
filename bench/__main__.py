"""Run every benchmark on the local Ray cluster, write bench/results/<name>.json, regenerate docs/benchmarks.md.

    python -m bench                       # everything, default settings (< 45 min on 2 cores)
    python -m bench --quick               # a smoke run: tiny data, 1 repetition, 0.1 s timings
                                          # (results in bench/results/quick/)
    python -m bench --only sweep,growth   # a subset (the others' JSON files stay as they are)
    python -m bench --render              # only regenerate the doc from the JSON files

The local cluster is started (`sweetspot up`) when none runs; it is left running.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import traceback
from pathlib import Path

from bench import common
from bench.render import render


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="tiny data, 1 repetition, fewer epochs, 0.1 s timings (a few minutes)")
    parser.add_argument("--only", help=f"comma-separated subset of: {', '.join(common.BENCHMARKS)}")
    parser.add_argument("--render", action="store_true", help="only regenerate the doc from the JSON files")
    parser.add_argument("--results", type=Path, help="where the JSON files go "
                        "(default bench/results, or bench/results/quick with --quick)")
    parser.add_argument("--doc", type=Path, help="the Markdown file to regenerate (default docs/benchmarks.md; "
                        "with --quick, <results>/benchmarks.md)")
    parser.add_argument("--scratch", type=Path, help="job outputs and logs (default ~/sweetspot_bench/<mode>)")
    args = parser.parse_args(argv)
    names = common.BENCHMARKS if not args.only else tuple(n.strip() for n in args.only.split(",") if n.strip())
    unknown = [n for n in names if n not in common.BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {', '.join(common.BENCHMARKS)}")
    args.names = [n for n in common.BENCHMARKS if n in names]
    return args


def run_one(name: str, ctx: common.Context) -> bool:
    module = importlib.import_module(f"bench.{name}")
    settings = ctx.settings(module)
    common.log(f"{name}: started ({'quick' if ctx.quick else 'default'} settings)")
    started = time.perf_counter()
    record = {"benchmark": name, "quick": ctx.quick, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "machine": common.machine(), "versions": common.versions(), "settings": settings}
    try:
        record.update(module.run(settings, ctx))
        ok = True
    except Exception as error:  # one failed benchmark must not lose the others' results
        traceback.print_exc()
        record["error"] = f"{type(error).__name__}: {error}"
        ok = False
    record["wall_seconds"] = time.perf_counter() - started
    record["machine"] = common.machine()  # now with the Ray cluster's size, if a benchmark connected
    path = common.write_result(ctx.results, name, record)
    common.log(f"{name}: {'done' if ok else 'FAILED'} in {record['wall_seconds']:.0f} s -> {path}")
    return ok


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    mode = "quick" if args.quick else "default"
    results = args.results or (common.QUICK_RESULTS if args.quick else common.RESULTS)
    doc = args.doc or (results / "benchmarks.md" if args.quick else common.DOC)
    ctx = common.Context(quick=args.quick, results=results,
                         scratch=args.scratch or Path.home() / "sweetspot_bench" / mode)
    failed = []
    if not args.render:
        os.environ.setdefault("RAY_AUTH_MODE", "token")
        if common.ensure_cluster():
            common.log("started the local Ray cluster (sweetspot up); it is left running")
        started = time.perf_counter()
        for name in args.names:
            if not run_one(name, ctx):
                failed.append(name)
        common.log(f"all benchmarks: {time.perf_counter() - started:.0f} s")
    render(results, doc, quick=args.quick)
    common.log(f"wrote {doc}")
    if failed:
        common.log(f"failed: {', '.join(failed)} (see their JSON files' `error`)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
