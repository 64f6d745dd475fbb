"""deploy/ checked against the real schemas: KubeRay's CRDs, Ray's autoscaler schema, pyproject's pins.

Nothing here needs a cluster or docker: the manifests are validated the way
the Kubernetes API server and `ray up` validate them, and strictly (an unknown
key anywhere the schema lists its keys is a typo the API server would drop).
"""

from __future__ import annotations

import copy
import functools
import json
import re
import shlex
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.conftest import ROOT

DEPLOY = ROOT / "deploy"
KUBERAY_SCHEMAS = ROOT / ".." / "shared" / "schemas" / "kuberay"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
LAUNCHERS = sorted((DEPLOY / "launcher").glob("*.yaml"))
OBJECT_META_KEYS = {"name", "namespace", "labels", "annotations", "generateName"}


def installed_ray_version() -> str:
    import ray

    return ray.__version__


def pyproject_pin(package: str) -> str:
    """The version spec of `package` in pyproject's dependencies, e.g. '==2.60.*'."""
    for requirement in PYPROJECT["project"]["dependencies"]:
        match = re.match(r"^([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*(.*)$", requirement)
        if match and match.group(1).lower() == package:
            return match.group(3)
    raise AssertionError(f"{package} is not a dependency in pyproject.toml")


# ---------------------------------------------------------------- KubeRay


def crd_schema(filename: str) -> dict:
    if not KUBERAY_SCHEMAS.is_dir():
        pytest.skip(f"KubeRay CRDs not found at {KUBERAY_SCHEMAS.resolve()} (../shared/schemas/kuberay "
                    "beside the repo)")
    return copy.deepcopy(_crd_schema(filename))


@functools.cache
def _crd_schema(filename: str) -> dict:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the CRDs are 1-2 MB of YAML
    crd = yaml.load((KUBERAY_SCHEMAS / filename).read_text(), Loader=loader)
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    assert version["served"] and version["storage"]
    return version["schema"]["openAPIV3Schema"]


def unknown_keys(instance, schema: dict, path: str = "") -> list[str]:
    """Every key of `instance` that the schema does not list where it lists its keys."""
    if not isinstance(schema, dict) or schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    found = []
    if isinstance(instance, dict) and schema.get("type", "object") == "object":
        properties = schema.get("properties")
        additional = schema.get("additionalProperties")
        for key, value in instance.items():
            where = f"{path}.{key}" if path else key
            if properties is not None and key in properties:
                found += unknown_keys(value, properties[key], where)
            elif isinstance(additional, dict):
                found += unknown_keys(value, additional, where)
            elif properties is not None and not additional:
                found.append(where)
    elif isinstance(instance, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(instance):
            found += unknown_keys(item, schema["items"], f"{path}[{index}]")
    return found


def check_manifest(manifest: dict, schema: dict) -> None:
    jsonschema.Draft7Validator(schema).validate(manifest)
    assert unknown_keys(manifest, schema) == []
    assert set(manifest["metadata"]) <= OBJECT_META_KEYS, manifest["metadata"]


def load_manifest(name: str) -> dict:
    return yaml.safe_load((DEPLOY / "kuberay" / name).read_text())


def check_gpu_cluster_spec(spec: dict) -> None:
    assert spec["rayVersion"] == installed_ray_version()
    assert spec["authOptions"] == {"mode": "token", "secretName": "sweetspot-ray-token"}
    assert spec["enableInTreeAutoscaling"] is True
    (group,) = spec["workerGroupSpecs"]
    assert 1 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    assert group["maxReplicas"] > group["minReplicas"], "autoscaling needs room above minReplicas"
    (worker,) = group["template"]["spec"]["containers"]
    limits = worker["resources"]["limits"]
    assert int(limits["nvidia.com/gpu"]) >= 1
    assert {"name": "TF_USE_LEGACY_KERAS", "value": "1"} in worker["env"]
    head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert head["image"] == worker["image"] == kuberay_image()
    assert "nvidia.com/gpu" not in head["resources"].get("limits", {})


def kuberay_pool(spec: dict) -> float:
    """The head's sweetspot_cpu (admission pool), checked to be one per CPU of the cluster at its largest."""
    from cluster.training.resources import ADMISSION_RESOURCE

    head = spec["headGroupSpec"]
    # rayStartParams values go into the `ray start` command line verbatim: the JSON sits in shell quotes.
    resources = json.loads(shlex.split(head["rayStartParams"]["resources"])[0])
    (group,) = spec["workerGroupSpecs"]
    assert ADMISSION_RESOURCE not in group["rayStartParams"].get("resources", ""), "only the head holds the pool"
    (worker,) = group["template"]["spec"]["containers"]
    largest = int(head["rayStartParams"]["num-cpus"]) + group["maxReplicas"] * int(worker["resources"]["limits"]["cpu"])
    assert resources == {ADMISSION_RESOURCE: largest}
    (container,) = head["template"]["spec"]["containers"]
    timeout = {e["name"]: e["value"] for e in container["env"]}["RAY_JOB_START_TIMEOUT_SECONDS"]
    assert int(timeout) >= 24 * 3600, "queued jobs wait PENDING longer than Ray's default 15 minutes"
    return resources[ADMISSION_RESOURCE]


def kuberay_image() -> str:
    return load_manifest("raycluster.yaml")["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]


def test_crds_have_the_fields_the_manifests_rely_on():
    cluster = crd_schema("ray.io_rayclusters.yaml")["properties"]["spec"]["properties"]
    assert cluster["authOptions"]["properties"]["mode"]["enum"] == ["disabled", "token"]
    assert "secretName" in cluster["authOptions"]["properties"]
    job = crd_schema("ray.io_rayjobs.yaml")["properties"]["spec"]["properties"]
    assert {"entrypoint", "runtimeEnvYAML", "shutdownAfterJobFinishes", "rayClusterSpec"} <= set(job)


def test_raycluster_validates_against_the_crd():
    manifest = load_manifest("raycluster.yaml")
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["kind"] == "RayCluster"
    check_manifest(manifest, crd_schema("ray.io_rayclusters.yaml"))
    check_gpu_cluster_spec(manifest["spec"])
    kuberay_pool(manifest["spec"])


def test_rayjob_validates_against_the_crd_and_runs_a_valid_spec():
    from cluster.spec import load_spec

    manifest = load_manifest("rayjob.yaml")
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["kind"] == "RayJob"
    check_manifest(manifest, crd_schema("ray.io_rayjobs.yaml"))
    spec = manifest["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    check_gpu_cluster_spec(spec["rayClusterSpec"])
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert runtime_env["env_vars"]["TF_USE_LEGACY_KERAS"] == "1"
    assert runtime_env["working_dir"] == "/home/ray/sweetspot"  # where the image puts the project
    assert "WORKDIR /home/ray/sweetspot" in (DEPLOY / "image" / "Dockerfile").read_text()

    # The entrypoint is `python -m jobs configs/<spec>.yaml ...`, and that spec with its
    # --set/--output validates here exactly as the job will validate it.
    words = shlex.split(spec["entrypoint"])
    assert words[:3] == ["python", "-m", "jobs"] and re.fullmatch(r"configs/[\w.-]+\.yaml", words[3])
    overrides, output, rest = [], None, words[4:]
    while rest:
        flag, value, *rest = rest
        assert flag in ("--set", "--output"), flag
        overrides += [value] if flag == "--set" else []
        output = value if flag == "--output" else output
    job = load_spec(ROOT / words[3], overrides, output)
    assert job.scaling.use_gpu and job.scaling.gpus_per_worker == 1
    (group,) = spec["rayClusterSpec"]["workerGroupSpecs"]
    assert group["minReplicas"] >= job.scaling.num_workers, "the job checks its GPUs when it starts"
    assert job.output.storage.startswith(("s3://", "gs://")), "workers on other nodes need shared storage"

    # `sweetspot submit` would admit this job: its CPU need fits the head's pool (not one worker's 8 CPUs).
    from cluster.training.resources import Capacity
    from cluster.tuning.budget import admission

    cpus, gpus = int(group["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"]), 1
    capacity = Capacity(cpus=cpus * group["minReplicas"], gpus=gpus * group["minReplicas"], node_cpus=cpus,
                        node_gpus=gpus, pool=kuberay_pool(spec["rayClusterSpec"]), pool_node_memory=16 * 2**30)
    ticket = admission(job, capacity)
    assert cpus < ticket.need.cpus <= capacity.pool, ticket.need.arithmetic


@pytest.mark.parametrize("mistake", ["workerGroupSpecs.0.template.spec.containers.0.resource",
                                     "workerGroupSpecs.0.minReplica", "authOption"])
def test_the_strict_check_catches_typos(mistake):
    schema = crd_schema("ray.io_rayclusters.yaml")
    manifest = copy.deepcopy(load_manifest("raycluster.yaml"))
    node, *parts = [manifest["spec"], *mistake.split(".")]
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node[part]
    node[parts[-1]] = {"a": 1} if parts[-1] == "resource" else 1
    assert unknown_keys(manifest, schema) == [f"spec.{mistake}".replace(".0.", "[0].")]


def test_a_wrong_type_fails_the_crd_schema():
    manifest = copy.deepcopy(load_manifest("raycluster.yaml"))
    manifest["spec"]["workerGroupSpecs"][0]["maxReplicas"] = "eight"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(crd_schema("ray.io_rayclusters.yaml")).validate(manifest)


# ---------------------------------------------------------------- cluster launcher


def ray_autoscaler_schema() -> dict:
    import ray

    return json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())


@pytest.mark.parametrize("path", LAUNCHERS, ids=lambda p: p.name)
def test_launcher_config_validates_against_rays_schema(path):
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load(path.read_text())
    jsonschema.validate(config, ray_autoscaler_schema())
    validate_config(prepare_config(copy.deepcopy(config)))  # what `ray up` runs, defaults merged in
    assert config["provider"]["type"] in path.name
    gpu_types = {name: t for name, t in config["available_node_types"].items() if t["resources"].get("GPU")}
    assert gpu_types, "a GPU worker type"
    for node_type in gpu_types.values():
        assert 1 <= node_type["min_workers"] < node_type["max_workers"] <= config["max_workers"]
    head = config["available_node_types"][config["head_node_type"]]
    assert not head["resources"].get("GPU")
    assert config["docker"]["image"] == kuberay_image()
    assert "--env TF_USE_LEGACY_KERAS=1" in config["docker"]["run_options"]
    # token auth: the same token file on every node, and Ray started in token mode
    assert config["file_mounts"]["/home/ray/.ray/auth_token"] == "~/.ray/auth_token"
    assert "--env RAY_AUTH_MODE=token" in config["docker"]["run_options"]
    for command in ("head_start_ray_commands", "worker_start_ray_commands"):
        assert any("RAY_AUTH_MODE=token ray start" in line for line in config[command])
    # the admission pool (docs/deploy.md): on the head only, one per CPU of the cluster at its largest
    from cluster.training.resources import ADMISSION_RESOURCE

    largest = head["resources"]["CPU"] + sum(t["max_workers"] * t["resources"]["CPU"] for t in gpu_types.values())
    assert head["resources"][ADMISSION_RESOURCE] == largest
    assert all(ADMISSION_RESOURCE not in t["resources"] for t in gpu_types.values())
    assert any("RAY_JOB_START_TIMEOUT_SECONDS=604800" in line for line in config["head_start_ray_commands"])


def test_launchers_exist_for_aws_and_gcp():
    assert {path.name for path in LAUNCHERS} >= {"aws-gpu.yaml", "gcp-gpu.yaml"}


def test_a_launcher_typo_fails_rays_schema():
    config = yaml.safe_load(LAUNCHERS[0].read_text())
    config["available_node_types"]["gpu_worker"]["max_worker"] = 3
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(config, ray_autoscaler_schema())


# ---------------------------------------------------------------- image


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (DEPLOY / "image" / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in text.splitlines() if line.strip()]


def test_image_base_matches_the_pinned_ray_and_python():
    instructions = dockerfile_instructions()
    args = dict(value.split("=", 1) for kind, value in instructions if kind == "ARG" and "=" in value)
    (base,) = [value for kind, value in instructions if kind == "FROM"]
    base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)
    match = re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-py(\d)(\d+)-gpu", base)
    assert match, base
    ray_version, python = match.group(1), f"{match.group(2)}.{match.group(3)}"
    assert ray_version == installed_ray_version()
    from packaging.specifiers import SpecifierSet

    assert ray_version in SpecifierSet(pyproject_pin("ray"))
    assert SpecifierSet(PYPROJECT["project"]["requires-python"]).contains(f"{python}.0"), python


def test_image_installs_its_dependencies_from_pyproject():
    """Every pip install is the project itself, or TensorFlow's CUDA extra at the version pyproject resolved."""
    runs = [value for kind, value in dockerfile_instructions() if kind == "RUN"]
    copies = [value for kind, value in dockerfile_instructions() if kind == "COPY"]
    assert any("pyproject.toml" in copy for copy in copies)
    installs = [part.strip() for run in runs for part in run.split("&&") if part.strip().startswith("pip install")]
    assert installs
    extras = set(PYPROJECT["project"].get("optional-dependencies", {}))
    for command in installs:
        targets = [word for word in shlex.split(command)[2:] if not word.startswith("-")]
        for target in targets:
            project = re.fullmatch(r"\.(\[([\w,]+)\])?", target)
            if project:
                assert set(filter(None, (project.group(2) or "").split(","))) <= extras, target
                continue
            # TensorFlow's CUDA wheels at the version the project's pin resolved to
            assert target == "tensorflow[and-cuda]==${TF_VERSION}", target
            pyproject_pin("tensorflow")
            assert any(re.fullmatch(r"TF_VERSION=\$\(pip show tensorflow \| sed -n 's/\^Version: //p'\)", part.strip())
                       for run in runs for part in run.split("&&")), "TF_VERSION comes from the installed tensorflow"
    assert any(re.fullmatch(r"\.\[[\w,]+\]|\.", word) for command in installs for word in shlex.split(command)), \
        "the image pip-installs the project"
