"""Property-based: every malformed spec derived from a valid one is refused, naming the offending field.

The faults are generated from the bundled configs and from the spec's own
models (their required fields and numeric bounds), so a field added later is
covered without touching this file.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import types
import typing

import annotated_types
import pytest
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st
from pydantic import BaseModel

from cluster.spec import JOB_KINDS, SpecError, validate_document
from tests.conftest import ROOT

# A sweep's pipelines would load TensorFlow to resolve their steps; the float-only
# search keeps this file fast, and test_spec.py covers the pipelines themselves.
BASES = {
    "train": yaml.safe_load((ROOT / "configs" / "train_sample.yaml").read_text()),
    "sweep": {**yaml.safe_load((ROOT / "configs" / "quickstart.yaml").read_text()),
              "search": {"family": "cnn", "widths": [0.25, 0.5], "depths": [2],
                         "pipelines": [{"name": "float", "pipeline": []}]}},
    "evaluate": yaml.safe_load((ROOT / "configs" / "evaluate_full.yaml").read_text()),
}
# Modest counts and no deadline: the file runs in seconds, even on a loaded machine.
EXAMPLES = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=20, deadline=None)

FieldPath = tuple  # a field's path in the document: ("train", "optimizer", "name"), list items by index


def dotted(path: FieldPath) -> str:
    return ".".join(str(p) for p in path) or "<spec>"


def _model_of(annotation) -> tuple[type[BaseModel] | None, bool]:
    """(model, is_list) when the annotation is a model, an optional model or a list of models."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = args[0] if len(args) == 1 else None
    if typing.get_origin(annotation) is list:
        inner, _ = _model_of(typing.get_args(annotation)[0])
        return inner, True
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    return None, False


def fields(model: type[BaseModel], document: dict, path: FieldPath = ()):
    """(path, FieldInfo, value or None) of every field the document can hold, sections it has recursed into."""
    for name, info in model.model_fields.items():
        value = document.get(name)
        yield path + (name,), info, value
        inner, is_list = _model_of(info.annotation)
        if inner is None:
            continue
        if is_list and isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, dict):
                    yield from fields(inner, item, path + (name, index))
        elif isinstance(value, dict):
            yield from fields(inner, value, path + (name,))


def get(document, path: FieldPath):
    for part in path:
        document = document[part]
    return document


def with_value(document: dict, path: FieldPath, value) -> dict:
    document = copy.deepcopy(document)
    get(document, path[:-1])[path[-1]] = value
    return document


def without(document: dict, path: FieldPath) -> dict:
    document = copy.deepcopy(document)
    del get(document, path[:-1])[path[-1]]
    return document


def assert_refused(document: dict, field: str, expected: str = "") -> str:
    with pytest.raises(SpecError) as error:
        validate_document(document, source="bad.yaml")
    message = str(error.value)
    # The field itself, or a part of it (a tuple's item), opens an error line.
    assert f"\n  {field}: " in message or f"\n  {field}." in message, f"expected an error at {field}:\n{message}"
    assert expected in message, message
    return message


def leaves(kind: str) -> list[FieldPath]:
    """Paths of the scalar values the base document sets (the tuple image_shape counts as one)."""
    found = []

    def walk(node, path):
        if isinstance(node, dict) and not path[-1:] == ("pipeline",):
            for key, value in node.items():
                walk(value, path + (key,))
        elif isinstance(node, list) and path[-1:] != ("image_shape",) and path[:1] != ("augment",):
            for index, value in enumerate(node):
                walk(value, path + (index,))
        elif not isinstance(node, (dict, list)) and node is not None:
            found.append(path)

    walk(BASES[kind], ())
    return found


def sections(kind: str) -> list[FieldPath]:
    """Every mapping in the base document where a key could go, the top level included."""
    found = [()]
    for path, info, value in fields(JOB_KINDS[kind], BASES[kind]):
        if isinstance(value, dict):
            found.append(path)
        elif isinstance(value, list) and _model_of(info.annotation)[0] is not None:
            found += [path + (index,) for index, item in enumerate(value) if isinstance(item, dict)]
    return found


KINDS = st.sampled_from(sorted(BASES))


@st.composite
def kind_and(draw, paths_of):
    kind = draw(KINDS)
    return kind, draw(st.sampled_from(paths_of(kind)))


# ------------------------------------------------------------------ wrong types


@given(kind_and(leaves), st.data())
@EXAMPLES
def test_a_value_of_the_wrong_type_names_its_path(target, data):
    kind, path = target
    original = get(BASES[kind], path)
    # No scalar field takes a mapping; no number, flag or version takes a word; no text field takes a number.
    wrong = [{"unexpected": 1}, ["unexpected"]] + (
        [12345] if isinstance(original, str) else ["not-a-number"])
    if path == ("kind",):
        assert_refused(with_value(BASES[kind], path, data.draw(st.sampled_from(wrong))), "kind", "expected one of")
        return
    assert_refused(with_value(BASES[kind], path, data.draw(st.sampled_from(wrong))), dotted(path))


@given(kind_and(lambda kind: sections(kind)[1:]), st.sampled_from([7, "text", ["a"], True]))
@EXAMPLES
def test_a_section_that_is_not_a_mapping_names_the_section(target, value):
    kind, path = target
    assert_refused(with_value(BASES[kind], path, value), dotted(path))


# ------------------------------------------------------------------ unknown keys

KEYS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12).map(lambda k: "x_" + k)


@given(kind_and(sections), KEYS)
@EXAMPLES
def test_an_unknown_key_at_any_level_names_its_path(target, key):
    kind, path = target
    document = copy.deepcopy(BASES[kind])
    get(document, path)[key] = 1
    assert_refused(document, dotted(path + (key,)), "Extra inputs are not permitted")


@given(st.sampled_from(["train", "sweep"]), KEYS)
@FEW
def test_an_unknown_key_in_an_augmentation_names_it(kind, key):
    document = copy.deepcopy(BASES[kind])
    (op, options), = document["augment"][0].items()
    options[key] = 1
    assert_refused(document, f"augment.0.{op}.{key}", "Extra inputs are not permitted")


# ------------------------------------------------------------------ out of range


def bounded(kind: str) -> list[tuple[FieldPath, object]]:
    """(path, bound) for every numeric bound and list minimum length a field of the document has."""
    found = []
    for path, info, value in fields(JOB_KINDS[kind], BASES[kind]):
        parent = get(BASES[kind], path[:-1])
        if not isinstance(parent, dict):
            continue
        for bound in info.metadata:
            if isinstance(bound, (annotated_types.Ge, annotated_types.Gt, annotated_types.Le, annotated_types.Lt,
                                  annotated_types.MinLen)):
                found.append((path, bound))
    return found


@st.composite
def out_of_range(draw):
    kind = draw(KINDS)
    path, bound = draw(st.sampled_from(bounded(kind)))
    if isinstance(bound, annotated_types.MinLen):
        return kind, path, [], "at least"
    limit = next(v for v in (getattr(bound, n, None) for n in ("ge", "gt", "le", "lt")) if v is not None)
    inclusive = isinstance(bound, (annotated_types.Ge, annotated_types.Le))
    if isinstance(limit, int) and not isinstance(get_or_default(kind, path), float):
        step = draw(st.integers(min_value=1 if inclusive else 0, max_value=10**6))
    else:
        step = draw(st.floats(min_value=1e-3, max_value=1e6) | (st.just(0.0) if not inclusive else st.nothing()))
    below = isinstance(bound, (annotated_types.Ge, annotated_types.Gt))
    return kind, path, limit - step if below else limit + step, "than"


def get_or_default(kind: str, path: FieldPath):
    """The value the document or the field's default gives, to pick an int or a float."""
    parent = get(BASES[kind], path[:-1])
    if path[-1] in parent:
        return parent[path[-1]]
    model = JOB_KINDS[kind]
    for path_, info, _ in fields(model, BASES[kind]):
        if path_ == path:
            return info.default
    return None


@given(out_of_range())
@EXAMPLES
def test_an_out_of_range_value_names_its_path(case):
    kind, path, value, expected = case
    assert_refused(with_value(BASES[kind], path, value), dotted(path), expected)


@pytest.mark.parametrize("fraction", [-0.1, 0.5, 0.9, 1.0])
def test_validation_fraction_outside_zero_to_half_is_refused(fraction):
    document = with_value(BASES["train"], ("data", "validation_fraction"), fraction)
    assert_refused(document, "data.validation_fraction", "than")


# ------------------------------------------------------------------ missing sections


def required(kind: str) -> list[FieldPath]:
    return [path for path, info, value in fields(JOB_KINDS[kind], BASES[kind])
            if info.is_required() and value is not None and path != ("kind",)]


@given(kind_and(required))
@EXAMPLES
def test_a_missing_required_field_or_section_names_it(target):
    kind, path = target
    assert_refused(without(BASES[kind], path), dotted(path), "Field required")


@given(KINDS)
@FEW
def test_a_missing_kind_lists_the_kinds(kind):
    assert_refused(without(BASES[kind], ("kind",)), "kind", "expected one of train, compress, sweep, evaluate")


@pytest.mark.parametrize("kind", [{"train": 1}, ["train"], 3, None, "Train"])
def test_a_kind_that_is_not_one_of_the_names_is_refused_not_crashed_on(kind):
    assert_refused(with_value(BASES["train"], ("kind",), kind), "kind", "expected one of")


# ------------------------------------------------------------------ conflicting options


@given(st.integers(1, 50), st.integers(0, 50))
@FEW
def test_warmup_not_shorter_than_training_names_train(epochs, extra):
    document = with_value(BASES["train"], ("train", "epochs"), epochs)
    document["train"]["warmup_epochs"] = epochs + extra
    assert_refused(document, "train", "must be fewer than epochs")


@given(st.sampled_from(["train", "sweep"]), st.integers(2, 64), st.data())
@FEW
def test_fewer_samples_per_batch_than_workers_names_both_fields(kind, workers, data):
    document = with_value(BASES[kind], ("scaling", "num_workers"), workers)
    document["train"]["global_batch_size"] = data.draw(st.integers(1, workers - 1))
    message = assert_refused(document, "<spec>", "must be at least scaling.num_workers")
    assert "train.global_batch_size" in message


@given(st.sampled_from(["train", "sweep"]), st.booleans(), st.floats(0.5, 8))
@FEW
def test_gpu_flag_and_gpu_count_must_agree(kind, use_gpu, gpus):
    document = copy.deepcopy(BASES[kind])
    document["scaling"].update(use_gpu=use_gpu, gpus_per_worker=0 if use_gpu else gpus)
    assert_refused(document, "scaling", "use_gpu")


@given(st.floats(0.01, 10), st.floats(0.001, 10))
@FEW
def test_contrast_lower_above_upper_names_the_augmentation(upper, gap):
    document = copy.deepcopy(BASES["train"])
    document["augment"] = [{"contrast": {"lower": upper + gap, "upper": upper}}]
    assert_refused(document, "augment.0.contrast", "must not exceed upper")


@given(st.integers(1, 20), st.integers(1, 20))
@FEW
def test_asha_grace_longer_than_training_is_refused_before_the_cluster(epochs, extra):
    document = copy.deepcopy(BASES["sweep"])
    document["train"]["epochs"] = epochs
    document["tune"] = {"scheduler": "asha", "grace_epochs": epochs + extra}
    assert_refused(document, "<spec>", "tune.grace_epochs")


@given(st.sampled_from(["train", "fine_tune"]), st.text(alphabet="abc/", min_size=1, max_size=8))
@FEW
def test_a_sweep_refuses_init_from(section, source):
    document = copy.deepcopy(BASES["sweep"])
    document[section]["init_from"] = source
    assert_refused(document, "<spec>", "init_from")


@given(st.integers(2, 64), st.integers(1, 63))
@FEW
def test_evaluate_cpus_must_cover_its_threads(threads, cpus):
    document = copy.deepcopy(BASES["evaluate"])
    document["evaluation"]["num_threads"] = threads
    document["cpus"] = min(cpus, threads - 1)
    assert_refused(document, "<spec>", "must cover evaluation.num_threads")


@given(st.sampled_from(["artifacts", "search.pipelines"]))
@FEW
def test_repeated_names_in_a_list_are_refused(where):
    kind = "evaluate" if where == "artifacts" else "sweep"
    document = copy.deepcopy(BASES[kind])
    items = get(document, tuple(where.split(".")))
    items.append(copy.deepcopy(items[0]))
    assert_refused(document, "<spec>" if kind == "evaluate" else "search", "repeated")


# ------------------------------------------------------------------ names that would leave the storage root

ESCAPES = ["../x", "..", ".", "/abs", "/", "a/b", "a\\b", "a\x00b", "", " ", ".hidden", "x" * 129, "~root",
           "a b", "a\nb"]


@pytest.mark.parametrize("name", ESCAPES)
def test_a_job_name_that_would_escape_the_storage_root_is_refused(name):
    assert_refused(with_value(BASES["train"], ("name",), name), "name", "must be a plain folder name")


@pytest.mark.parametrize("where", [("artifacts", 0, "name"), ("search", "pipelines", 0, "name")])
@pytest.mark.parametrize("name", ["../x", "/abs", "a/b", ""])
def test_a_list_item_name_that_would_escape_is_refused(where, name):
    kind = "evaluate" if where[0] == "artifacts" else "sweep"
    assert_refused(with_value(BASES[kind], where, name), dotted(where), "must be a plain folder name")


@pytest.mark.parametrize("storage, expected", [("relative/runs", "must be absolute"),
                                               ("../up", "must be absolute"),
                                               ("/tmp/a\x00b", "NUL")])
def test_a_storage_root_that_is_not_absolute_or_has_nul_is_refused(storage, expected):
    assert_refused(with_value(BASES["train"], ("output", "storage"), storage), "output.storage", expected)


@given(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True))
@FEW
def test_every_plain_name_is_accepted(name):
    spec = validate_document(with_value(BASES["train"], ("name",), name))
    assert spec.name == name


# ------------------------------------------------------------------ the real entry point


def test_the_job_entry_point_exits_2_naming_the_field_and_writes_nothing(tmp_path):
    storage = tmp_path / "results"
    document = copy.deepcopy(BASES["train"])
    document["train"]["epochs"] = 0
    document["output"]["storage"] = str(storage)
    spec = tmp_path / "bad.yaml"
    spec.write_text(yaml.safe_dump(document))
    # Any contact with a cluster would fail loudly at this address.
    env = {**os.environ, "RAY_ADDRESS": "127.0.0.1:1"}
    done = subprocess.run([sys.executable, "-m", "jobs", str(spec), "--output", str(storage)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "  train.epochs: Input should be greater than or equal to 1 (got 0)" in done.stderr
    assert "Traceback" not in done.stderr
    assert not storage.exists()
