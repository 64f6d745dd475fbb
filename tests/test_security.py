"""No user file is read by a loader that can run code, and the local cluster is reachable from this host only."""

from __future__ import annotations

import ast

import pytest

from cluster import local
from tests.conftest import ROOT

SOURCES = sorted(p for folder in ("cluster", "jobs") for p in (ROOT / folder).rglob("*.py"))
# module.function calls that build objects (run code) from the bytes they read.
UNSAFE_CALLS = {("yaml", "load"), ("yaml", "unsafe_load"), ("yaml", "full_load"), ("yaml", "load_all"),
                ("pickle", "load"), ("pickle", "loads"), ("cloudpickle", "load"), ("cloudpickle", "loads"),
                ("dill", "load"), ("dill", "loads"), ("marshal", "loads"), ("shelve", "open")}
# Keyword arguments that turn a loader's protection off (Keras lambda layers, NumPy object arrays).
UNSAFE_FLAGS = {"safe_mode": False, "allow_pickle": True}


def findings(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        function = node.func
        if isinstance(function, ast.Name) and function.id in ("eval", "exec"):
            found.append(f"{function.id}()")
        if isinstance(function, ast.Attribute) and isinstance(function.value, ast.Name) \
                and (function.value.id, function.attr) in UNSAFE_CALLS:
            found.append(f"{function.value.id}.{function.attr}()")
        for keyword in node.keywords:
            if keyword.arg in UNSAFE_FLAGS and isinstance(keyword.value, ast.Constant) \
                    and keyword.value.value == UNSAFE_FLAGS[keyword.arg]:
                found.append(f"{keyword.arg}={keyword.value.value}")
    return found


# The one place a protection may go off: `load_keras_model(..., trust_code=True)`, for a spec that says
# `trust_model_code: true` (tests/test_models.py checks the default refuses).
OPTED_IN = {"cluster/models.py": ["safe_mode=False"]}


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_code_running_loader_in_the_service(source):
    assert findings(ast.parse(source.read_text())) == OPTED_IN.get(str(source.relative_to(ROOT)), [])


def test_the_scan_finds_what_it_looks_for():
    sample = ("import yaml, pickle\nyaml.load(f)\npickle.loads(b)\neval('1')\n"
              "keras.models.load_model(p, safe_mode=False)\nnp.load(p, allow_pickle=True)\n")
    assert findings(ast.parse(sample)) == ["yaml.load()", "pickle.loads()", "eval()", "safe_mode=False",
                                           "allow_pickle=True"]


def test_the_local_cluster_binds_its_dashboard_to_localhost_with_token_auth(monkeypatch):
    """`sweetspot up` as it would run, with the `ray` commands recorded instead of run."""
    commands = []
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.setattr(local, "is_running", lambda: False)
    monkeypatch.setattr(local, "dashboard_up", lambda timeout=2.0: True)
    monkeypatch.setattr(local, "restrict_token_file", lambda: None)
    monkeypatch.setattr(local.subprocess, "run", lambda command, **options: commands.append((command, options)))
    assert local.up(num_cpus=1) is True
    (generate, generate_options), (start, start_options) = commands
    assert generate[1:] == ["get-auth-token", "--generate"]
    assert start[1:3] == ["start", "--head"]
    assert start[start.index("--dashboard-host") + 1] == "127.0.0.1"
    assert start_options["env"]["RAY_AUTH_MODE"] == "token"
    assert local.DASHBOARD_URL.startswith("http://127.0.0.1:")
