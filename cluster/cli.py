"""The `sweetspot` command.

    sweetspot up [--num-cpus N]        start a laptop-local Ray cluster (token auth on, dashboard on 127.0.0.1)
    sweetspot down                     stop it
    sweetspot validate SPEC [--set k=v] [--output DIR]
    sweetspot schema                   print the spec's JSON Schema
    sweetspot quickstart [SPEC]        up, `ray job submit` the spec, follow it, print the result
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import cluster  # noqa: F401
from cluster import local
from cluster.spec import REMOTE_SCHEMES, SpecError, json_schema, load_spec, run_dir

PROJECT_ROOT = Path(__file__).resolve().parent.parent
QUICKSTART_SPEC = "configs/quickstart.yaml"
# Two Train workers plus the Ray Data stage need more logical CPUs than a
# 2-core laptop has; Ray schedules by these counts, the OS shares the cores.
DEFAULT_LOCAL_CPUS = 4


def _spec_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--output", help="storage root for the results (a relative path is taken from here)")


def localize_data_paths(spec, overrides: list[str], working_dir: Path) -> list[str]:
    """Overrides that make relative data paths outside the uploaded working dir absolute.

    A submitted job runs in a copy of the working dir: paths inside it still
    resolve there, paths outside it (../shared/...) only on this machine.
    """
    extra = []
    for field in ("train", "test"):
        value = getattr(spec.data, field, None) if hasattr(spec, "data") else None
        if not value or value.startswith(REMOTE_SCHEMES) or os.path.isabs(value):
            continue
        absolute = Path(os.path.abspath(value))
        if not absolute.is_relative_to(working_dir):
            extra.append(f"data.{field}={absolute}")
    return overrides + extra


def submit_with_ray_cli(spec_path: str, overrides: list[str], output: str | None, wait: bool = True) -> int:
    """`ray job submit --working-dir . -- python -m jobs SPEC ...` against the local cluster."""
    command = [local.ray_executable(), "job", "submit", "--address", local.DASHBOARD_URL,
               "--working-dir", str(PROJECT_ROOT)]
    if not wait:
        command.append("--no-wait")
    command += ["--", "python", "-m", "jobs", spec_path]
    for item in overrides:
        command += ["--set", item]
    if output:
        command += ["--output", output]
    return subprocess.run(command, env=local.client_env(), cwd=PROJECT_ROOT).returncode


def print_summary(summary_path: Path) -> None:
    summary = json.loads(summary_path.read_text())
    print(f"\nresults: {summary_path.parent}")
    for key in ("test_accuracy", "tflite_test_accuracy", "epochs_completed", "samples_per_second",
                "size_bytes_gzip", "sweet_spot"):
        if key in summary:
            print(f"  {key}: {summary[key]}")
    if "report" in summary.get("artifacts", {}):
        print(f"  report: {summary['artifacts']['report']}")


def cmd_quickstart(args: argparse.Namespace) -> int:
    spec = load_spec(PROJECT_ROOT / args.spec, args.overrides, args.output)
    if local.up(num_cpus=args.num_cpus):
        print(f"started a local Ray cluster ({local.DASHBOARD_URL})")
    overrides = localize_data_paths(spec, args.overrides, PROJECT_ROOT)
    storage = spec.output.storage
    code = submit_with_ray_cli(args.spec, overrides, storage)
    summary = Path(run_dir(spec)) / "summary.json"
    if code == 0 and summary.exists():
        print_summary(summary)
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sweetspot", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start a local Ray cluster")
    up.add_argument("--num-cpus", type=int, default=DEFAULT_LOCAL_CPUS)
    up.add_argument("--num-gpus", type=int)
    commands.add_parser("down", help="stop the local Ray cluster")
    _spec_args(commands.add_parser("validate", help="validate a spec and print it with defaults"))
    commands.add_parser("schema", help="print the spec's JSON Schema")
    quick = commands.add_parser("quickstart", help="up + submit the quickstart spec + print its result")
    quick.add_argument("spec", nargs="?", default=QUICKSTART_SPEC)
    quick.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    quick.add_argument("--output")
    quick.add_argument("--num-cpus", type=int, default=DEFAULT_LOCAL_CPUS)
    args = parser.parse_args(argv)

    try:
        if args.command == "up":
            started = local.up(num_cpus=args.num_cpus, num_gpus=args.num_gpus)
            print(("started" if started else "already running") + f": {local.DASHBOARD_URL} (token auth on; "
                  f"clients need RAY_AUTH_MODE=token and {local.TOKEN_FILE})")
        elif args.command == "down":
            local.down()
        elif args.command == "validate":
            from cluster.spec import spec_to_yaml

            print(spec_to_yaml(load_spec(args.spec, args.overrides, args.output)), end="")
        elif args.command == "schema":
            print(json.dumps(json_schema(), indent=2))
        elif args.command == "quickstart":
            return cmd_quickstart(args)
    except SpecError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
