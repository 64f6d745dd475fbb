"""The `sweetspot` command.

Local cluster:
    sweetspot up [--num-cpus N]        start a laptop-local Ray cluster (token auth on, dashboard on 127.0.0.1)
    sweetspot down                     stop it
    sweetspot quickstart [SPEC]        up, `ray job submit` the spec, follow it, print the result

Specs:
    sweetspot validate SPEC [--set k=v] [--output DIR]
    sweetspot schema                   print the spec's JSON Schema

Jobs (any cluster: --address, else $RAY_ADDRESS, else http://127.0.0.1:8265):
    sweetspot submit SPEC [--set k=v] [--output DIR] [--wait]    validate, upload this project, run `python -m jobs SPEC`
    sweetspot status ID | logs ID [--follow] | stop ID | list
    sweetspot results NAME [--storage ROOT]                       the summary table of a finished job

The auth token is found the way Ray finds it: $RAY_AUTH_TOKEN, the file in
$RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import deque
from pathlib import Path

from cluster import WORKER_ENV, local
from cluster.results import TrainSummary
from cluster.results import read_summary as typed_summary
from cluster.spec import DEFAULT_STORAGE, REMOTE_SCHEMES, SpecError, json_schema, load_spec, run_dir
from cluster.tables import render, variant_table
from cluster.training.resources import ADMITTED_ENV

PROJECT_ROOT = Path(__file__).resolve().parent.parent
QUICKSTART_SPEC = "configs/quickstart.yaml"
# Two Train workers plus the Ray Data stage need more logical CPUs than a
# 2-core laptop has; Ray schedules by these counts, the OS shares the cores.
DEFAULT_LOCAL_CPUS = 4
# A spec outside the uploaded working dir travels in this variable of the job's
# runtime_env; the entrypoint writes it to a temporary file for `python -m jobs`.
SPEC_ENV = "SWEETSPOT_SPEC_YAML"
# Spec fields holding local paths a job opens (those a kind lacks are skipped).
PATH_FIELDS = ("data.train", "data.test", "train.init_from", "baseline")


class ResultsError(RuntimeError):
    """No readable summary.json for the name asked for."""


def _spec_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--output", help="storage root for the results (a relative path is taken from here)")


def localize_data_paths(spec, overrides: list[str], working_dir: Path, cwd: Path | None = None) -> list[str]:
    """Overrides that keep the spec's relative paths pointing where they point from `cwd`.

    A submitted job runs in a copy of the working dir: a path inside it is
    rewritten relative to the working dir (unchanged when `cwd` is the working
    dir), a path outside it (../shared/...) made absolute, since it exists only
    on this machine (or on a shared filesystem).
    """
    cwd = Path(os.path.abspath(cwd or os.getcwd()))
    working_dir = Path(os.path.abspath(working_dir))
    extra = []
    for dotted in PATH_FIELDS:
        value = spec
        for part in dotted.split("."):
            value = getattr(value, part, None)
        # ~ expands where the job runs; URIs and absolute paths mean the same everywhere.
        if not isinstance(value, str) or not value or value.startswith((*REMOTE_SCHEMES, "~")) \
                or os.path.isabs(value):
            continue
        absolute = Path(os.path.normpath(cwd / value))
        if not absolute.is_relative_to(working_dir):
            extra.append(f"{dotted}={absolute}")
        elif cwd != working_dir:
            extra.append(f"{dotted}={absolute.relative_to(working_dir).as_posix()}")
    return overrides + extra


def submit_with_ray_cli(spec_path: str, overrides: list[str], output: str | None, ticket=None,
                       verbose: bool = False, run_folder: Path | None = None) -> int:
    """`ray job submit --working-dir . -- python -m jobs SPEC ...` against the local cluster, followed to its end.

    `ticket` (an Admission) adds the `--entrypoint-resources`/`--entrypoint-memory` it reserves.
    The console shows the job's own progress lines (`verbose`: everything); the
    whole output goes to `run_folder`/job.log (see `follow_compactly`).
    """
    reserved = ticket is not None and bool(ticket.resources)
    # A driver its submission reserved resources for holds no share of its own (cluster/admission.py).
    env_vars = {**WORKER_ENV, ADMITTED_ENV: "1"} if reserved else WORKER_ENV
    command = [local.ray_executable(), "job", "submit", "--address", local.DASHBOARD_URL,
               "--working-dir", str(PROJECT_ROOT), "--runtime-env-json", json.dumps({"env_vars": env_vars})]
    if reserved:
        command += ["--entrypoint-resources", json.dumps(ticket.resources), "--entrypoint-memory", str(ticket.memory)]
    command += ["--", "python", "-m", "jobs", spec_path]
    for item in overrides:
        command += ["--set", item]
    if output:
        command += ["--output", output]
    if verbose:
        return subprocess.run(command, env=local.client_env(), cwd=PROJECT_ROOT).returncode
    return follow_compactly(command, run_folder)


# The job's own progress lines (cluster.runs.log), wherever Ray's log prefix puts them.
OWN_LINE = re.compile(r"\[sweetspot \d\d:\d\d:\d\d\] .*|^(error|warning): .*")
SUBMITTED = re.compile(r"Job '(\S+)' submitted successfully")
FAILURE_TAIL_LINES = 40
JOB_LOG = "job.log"


def follow_compactly(command: list[str], run_folder: Path | None) -> int:
    """Run `command` (a `ray job submit` that follows the job), printing only the job's own lines.

    Ray's and the libraries' output (worker start-up, Ray Data plans, Tune
    tables) goes to a log file, moved into `run_folder` when the job succeeded
    (a refused job writes nothing there); on failure the end of it is printed
    with the file's path.
    """
    log_file = tempfile.NamedTemporaryFile("w", prefix="sweetspot-job-", suffix=".log", delete=False)
    tail: deque[str] = deque(maxlen=FAILURE_TAIL_LINES)
    with log_file, subprocess.Popen(command, env=local.client_env(), cwd=PROJECT_ROOT, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, errors="replace") as process:
        for line in process.stdout:
            log_file.write(line)
            tail.append(line.rstrip("\n"))
            own, submitted = OWN_LINE.search(line), SUBMITTED.search(line)
            if submitted:
                print(f"submitted job {submitted.group(1)} (`sweetspot logs {submitted.group(1)}` for its full log)",
                      flush=True)
            elif own:
                print(own.group(0).rstrip(), flush=True)
        code = process.wait()
    log_path = Path(log_file.name)
    if code == 0 and run_folder is not None and run_folder.is_dir():
        log_path = Path(shutil.move(log_path, run_folder / JOB_LOG))
    if code != 0:
        print(f"\nthe job failed; the end of its log ({log_path}):", file=sys.stderr)
        print("\n".join(tail), file=sys.stderr)
    return code


# ---------------------------------------------------------------- results


def _format(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if value is None:
        return "-"
    return str(value)


def _scalars(mapping: dict) -> dict:
    return {k: v for k, v in mapping.items() if not isinstance(v, (dict, list))}


HEAD_FIELDS = ("kind", "name", "baseline", "sweet_spot", "closest")


def summary_table(summary: dict, wide: bool = False) -> str:
    """A train job: one row per figure. A job with variants: one row per variant, the compact columns
    (`wide`: every column)."""
    typed = typed_summary(summary)
    if isinstance(typed, TrainSummary):  # one model: a row per figure
        return render(["figure", "value"], [[key, _format(value)] for key, value in _scalars(summary).items()])
    head = [f"{key}: {getattr(typed, key)}" for key in HEAD_FIELDS if getattr(typed, key, None) is not None]
    return "\n".join(head + ["", variant_table(typed, wide)])


def read_summary(storage: str, name: str) -> tuple[str, dict]:
    from cluster.storage import RunStorage, StorageError

    root = storage if storage.startswith(REMOTE_SCHEMES) else os.path.abspath(os.path.expanduser(storage))
    run = RunStorage(f"{root.rstrip('/')}/{name}")
    try:
        if not run.exists("summary.json"):
            raise ResultsError(f"no results named {name!r} under {root}: {run.path('summary.json')} does not exist "
                            f"(has the job finished? pass --storage if it wrote elsewhere)")
        return run.path("summary.json"), json.loads(run.read_text("summary.json"))
    except (OSError, StorageError, json.JSONDecodeError) as error:
        raise ResultsError(f"cannot read {run.path('summary.json')}: {error}") from None


def print_results(path: str, summary: dict, wide: bool = False, as_json: bool = False) -> None:
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    print(f"results: {path.rsplit('/', 1)[0]}")
    print(summary_table(summary, wide))
    if summary.get("kind") == "sweep":
        # Imported here on purpose: matplotlib (the report's plots) costs a second the other commands need not pay.
        from cluster.reporting import verdict

        print(textwrap.fill(verdict(typed_summary(summary)).replace("**", ""), width=100, break_long_words=False,
                            break_on_hyphens=False))
    report = summary.get("artifacts", {}).get("report") if isinstance(summary.get("artifacts"), dict) else None
    if report:
        print(f"report: {report}")


def print_summary(summary_path: Path) -> None:
    print()
    print_results(str(summary_path), json.loads(Path(summary_path).read_text()))


# ---------------------------------------------------------------- commands


def cmd_quickstart(args: argparse.Namespace) -> int:
    spec = load_spec(PROJECT_ROOT / args.spec, args.overrides, args.output)
    if local.up(num_cpus=args.num_cpus):
        print(f"started a local Ray cluster ({local.DASHBOARD_URL})")
    from cluster.client import JobClient

    from cluster.tuning.budget import admission

    # The job server answers and takes our token (or one clear line), and the job fits.
    ticket = admission(spec, JobClient(local.DASHBOARD_URL).capacity())
    print(ticket.note, file=sys.stderr, flush=True)
    overrides = localize_data_paths(spec, args.overrides, PROJECT_ROOT, PROJECT_ROOT)
    storage = spec.output.storage
    code = submit_with_ray_cli(args.spec, overrides, storage, ticket=ticket, verbose=args.verbose,
                               run_folder=Path(run_dir(spec)))
    summary = Path(run_dir(spec)) / "summary.json"
    if code == 0 and summary.exists():
        print_summary(summary)
    return code


def build_submission(spec_arg: str, overrides: list[str], output: str | None, working_dir: Path,
                     cwd: Path | None = None) -> tuple[object, str, dict]:
    """Validate the spec here and build (spec, entrypoint, runtime_env) for the job server."""
    spec = load_spec(spec_arg, overrides, output)
    working_dir = Path(os.path.abspath(working_dir))
    cwd = Path(os.path.abspath(cwd or os.getcwd()))
    arguments = []
    for item in localize_data_paths(spec, overrides, working_dir, cwd):
        arguments += ["--set", item]
    if output is not None:
        arguments += ["--output", spec.output.storage]  # resolved here: the job runs elsewhere
    env_vars = dict(WORKER_ENV)
    spec_file = Path(os.path.normpath(cwd / os.path.expanduser(spec_arg)))
    if spec_file.is_relative_to(working_dir):
        entrypoint = shlex.join(["python", "-m", "jobs", spec_file.relative_to(working_dir).as_posix(), *arguments])
    else:
        # Not in the upload: ship its text and hand the job a temporary copy.
        env_vars[SPEC_ENV] = spec_file.read_text()
        entrypoint = ('spec=$(mktemp -t sweetspot-spec.XXXXXX) && printf "%s" "$' + SPEC_ENV + '" > "$spec" && '
                      + ('python -m jobs "$spec" ' + shlex.join(arguments)).rstrip()
                      + '; status=$?; rm -f "$spec"; exit $status')
    runtime_env = {"working_dir": str(working_dir), "env_vars": env_vars}
    return spec, entrypoint, runtime_env


def _client(args):
    from cluster.client import JobClient

    return JobClient(args.address)


def _follow(client, job_id: str) -> str:
    for chunk in client.follow(job_id):
        print(chunk, end="", flush=True)
    return client.wait(job_id)


def cmd_submit(args: argparse.Namespace) -> int:
    spec, entrypoint, runtime_env = build_submission(args.spec, args.overrides, args.output, args.working_dir)
    client = _client(args)
    from cluster.tuning.budget import admission

    ticket = admission(spec, client.capacity())  # refuses a job the cluster can never hold, before the upload
    print(ticket.note, file=sys.stderr, flush=True)
    metadata = {"sweetspot_name": spec.name, "sweetspot_storage": spec.output.storage,
                "sweetspot_spec": os.path.abspath(args.spec), "sweetspot_cpus": f"{ticket.need.cpus:g}"}
    print(f"uploading {runtime_env['working_dir']} to {client.address}", file=sys.stderr, flush=True)
    job_id = client.submit(entrypoint, runtime_env, metadata, entrypoint_resources=ticket.resources,
                           entrypoint_memory=ticket.memory)
    print(job_id, flush=True)
    if not args.wait:
        print(f"submitted {spec.name!r} to {client.address}; follow it with `sweetspot logs --follow {job_id}`, "
              f"results with `sweetspot results {spec.name} --storage {spec.output.storage}`", file=sys.stderr)
        return 0
    status = _follow(client, job_id)
    print(f"job {job_id}: {status}")
    if status == "SUCCEEDED":
        try:
            print_results(*read_summary(spec.output.storage, spec.name))
        except ResultsError:
            pass  # storage this machine cannot see
        return 0
    return 1


def cmd_status(args) -> int:
    info = _client(args).info(args.job_id)
    print(f"{args.job_id}: {info.status}" + (f" ({info.message})" if info.message else ""))
    return 0


def cmd_logs(args) -> int:
    client = _client(args)
    if args.follow:
        status = _follow(client, args.job_id)
        print(f"job {args.job_id}: {status}", file=sys.stderr)
    else:
        print(client.logs(args.job_id), end="")
    return 0


def cmd_stop(args) -> int:
    client = _client(args)
    stopped = client.stop(args.job_id)
    if not stopped:
        print(f"{args.job_id}: already {client.status(args.job_id)}")
        return 0
    print(f"{args.job_id}: stop requested")
    if args.wait:
        print(f"{args.job_id}: {client.wait(args.job_id, timeout=60)}")
    return 0


def cmd_list(args) -> int:
    jobs = sorted(_client(args).list(), key=lambda job: job.start_time or 0)
    if not jobs:
        print("no jobs")
        return 0
    rows = []
    for job in jobs:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(job.start_time / 1000)) if job.start_time else "-"
        entrypoint = job.entrypoint or ""
        if entrypoint.startswith("spec=$(mktemp"):  # a spec sent along with the job: show where it came from
            entrypoint = f"python -m jobs {(job.metadata or {}).get('sweetspot_spec', '<spec>')} ..."
        rows.append([job.submission_id or job.job_id or "-", str(job.status), (job.metadata or {}).get(
            "sweetspot_name", "-"), started, entrypoint if len(entrypoint) <= 60 else entrypoint[:57] + "..."])
    print(render(["id", "status", "name", "started", "entrypoint"], rows))
    return 0


def cmd_results(args) -> int:
    storage, name = args.storage, args.name
    if "/" in name.rstrip("/"):  # a run folder, as a job prints it ("results: <folder>"), not a name
        storage, name = name.rstrip("/").rsplit("/", 1)
    print_results(*read_summary(storage or "/", name), wide=args.wide, as_json=args.json)
    return 0


def _address_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", help="the cluster's dashboard URL (default: $RAY_ADDRESS, else "
                                          "http://127.0.0.1:8265)")


def build_parser() -> argparse.ArgumentParser:
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
    quick.add_argument("--verbose", action="store_true",
                       help="print the job's whole output (Ray, Ray Data, Tune), not only its progress lines")

    submit = commands.add_parser("submit", help="validate a spec and submit it as a Ray job")
    _spec_args(submit)
    _address_arg(submit)
    submit.add_argument("--wait", action="store_true", help="follow the job's output until it ends")
    submit.add_argument("--working-dir", type=Path, default=PROJECT_ROOT,
                        help=f"the folder uploaded as the job's working dir (default: {PROJECT_ROOT})")
    for name, text in (("status", "a job's status"), ("logs", "a job's output"), ("stop", "stop a job")):
        command = commands.add_parser(name, help=text)
        command.add_argument("job_id", metavar="ID")
        _address_arg(command)
    commands.choices["logs"].add_argument("--follow", "-f", action="store_true", help="stream until the job ends")
    commands.choices["stop"].add_argument("--wait", action="store_true", help="wait until it has stopped")
    _address_arg(commands.add_parser("list", help="the cluster's jobs"))
    results = commands.add_parser("results", help="print a finished job's summary table and report path")
    results.add_argument("name", help="the job's name, or its run folder (as the job prints it: results: <folder>)")
    results.add_argument("--storage", default=DEFAULT_STORAGE,
                         help=f"the storage root a name is under (default {DEFAULT_STORAGE})")
    shown = results.add_mutually_exclusive_group()
    shown.add_argument("--wide", action="store_true", help="every figure of every variant")
    shown.add_argument("--json", action="store_true", help="the whole summary.json")
    return parser


HANDLERS = {"submit": cmd_submit, "status": cmd_status, "logs": cmd_logs, "stop": cmd_stop, "list": cmd_list,
            "results": cmd_results, "quickstart": cmd_quickstart}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from cluster.client import ClusterError
    from cluster.training.resources import ResourceError

    try:
        if args.command == "up":
            started = local.up(num_cpus=args.num_cpus, num_gpus=args.num_gpus)
            state = "started" if started else "already running"
            if local.token_auth_in_force():
                print(f"{state}: {local.DASHBOARD_URL} (token auth on; clients need RAY_AUTH_MODE=token and "
                      f"{local.TOKEN_FILE})")
            else:
                print(f"{state}: {local.DASHBOARD_URL} (token auth OFF: the dashboard answers without a token, so "
                      f"anyone who reaches it can run code; this shell has RAY_AUTH_MODE="
                      f"{os.environ.get('RAY_AUTH_MODE', '')!r}. Unset it, then `sweetspot down` and "
                      "`sweetspot up`)", file=sys.stderr)
        elif args.command == "down":
            local.down()
        elif args.command == "validate":
            from cluster.spec import spec_to_yaml

            print(spec_to_yaml(load_spec(args.spec, args.overrides, args.output)), end="")
        elif args.command == "schema":
            print(json.dumps(json_schema(), indent=2))
        else:
            return HANDLERS[args.command](args)
    except (SpecError, ResourceError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (ClusterError, ResultsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted (a submitted job keeps running: `sweetspot stop ID` stops it)", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader left (`sweetspot results x | head`): stop quietly, as other command-line tools do.
        # stdout goes to devnull so Python's flush at exit does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    return 0


if __name__ == "__main__":
    sys.exit(main())
