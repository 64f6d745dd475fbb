"""The job spec: valid specs load, each kind of mistake names its field, overrides and --output work."""

import json
import re
import os
import subprocess
import sys

import pytest
import yaml

from cluster.spec import SpecError, apply_overrides, json_schema, load_spec, validate_document
from tests.conftest import ROOT, train_document


def write(tmp_path, document) -> str:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(document))
    return str(path)


@pytest.mark.parametrize("config", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_bundled_config_validates(config):
    spec = load_spec(config)
    assert spec.name


def test_defaults_are_filled_in(tmp_path):
    spec = load_spec(write(tmp_path, train_document()))
    assert spec.train.optimizer.name == "adam"
    assert spec.augment[0].op == "flip_left_right" and spec.augment[0].p == 0.5
    assert spec.scaling.max_failures == 2


@pytest.mark.parametrize("change, field, expected", [
    ({"train": {"epochs": 0}}, "train.epochs", "greater than or equal to 1"),
    ({"train": {"epochs": "ten"}}, "train.epochs", "valid integer"),
    ({"train": {"optimizer": {"name": "adagrad"}}}, "train.optimizer.name", "'adam'"),
    ({"model": {"family": "cnn", "colour": "blue"}}, "model.colour", "Extra inputs are not permitted"),
    ({"data": {"train": "x", "test": "y", "num_classes": 1}}, "data.num_classes", "greater than or equal to 2"),
    ({"data": {"train": "x", "num_classes": 10}}, "data.test", "Field required"),
    ({"data": {"train": "x", "test": "y", "num_classes": 10, "validation_fraction": 0.7}},
     "data.validation_fraction", "less than 0.5"),
    ({"augment": [{"flip_left_right": {"p": 1.5}}]}, "augment.0.flip_left_right.p", "less than or equal to 1"),
    ({"augment": [{"rotate": {"p": 0.5}}]}, "augment.0", "unknown op 'rotate'; known: flip_left_right"),
    ({"augment": [{"contrast": {"lower": 2.0, "upper": 1.0}}]}, "augment.0.contrast", "must not exceed"),
    ({"scaling": {"num_workers": 2, "use_gpu": True}}, "scaling", "gpus_per_worker is 0"),
    ({"output": {"storage": "results/"}}, "output.storage", "must be absolute"),
    ({"name": "../escape"}, "name", "must be a plain folder name"),
    ({"name": "/abs"}, "name", "must be a plain folder name"),
    ({"kind": "deploy"}, "kind", "expected one of"),
    ({"train": {"epochs": 3, "warmup_epochs": 3}}, "train", "fewer than epochs"),
    ({"trust_model_code": "yes"}, "trust_model_code", "valid boolean"),
])
def test_mistakes_name_the_field(tmp_path, change, field, expected):
    with pytest.raises(SpecError) as error:
        load_spec(write(tmp_path, train_document(**change)))
    message = str(error.value)
    assert f"  {field}: " in message or f"  {field}:" in message, message
    assert expected in message, message


def test_missing_section_and_unknown_top_level_key(tmp_path):
    document = train_document()
    del document["data"]
    document["trian"] = {}
    with pytest.raises(SpecError) as error:
        load_spec(write(tmp_path, document))
    assert "  data: Field required" in str(error.value)
    assert "  trian: Extra inputs are not permitted" in str(error.value)


def test_not_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: train\n  name: [unclosed")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(bad)
    with pytest.raises(SpecError, match="cannot read the spec"):
        load_spec(tmp_path / "absent.yaml")


def test_yaml_tags_are_not_constructed(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("kind: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(evil)


@pytest.mark.parametrize("field, value, message", [
    ("epochs", True, "train.epochs: Input should be a valid integer"),
    ("epochs", "3", "train.epochs: Input should be a valid integer"),
    ("global_batch_size", 64.5, "train.global_batch_size: Input should be a valid integer"),
    ("seed", False, "train.seed: Input should be a valid integer"),
])
def test_types_are_strict_a_boolean_or_text_is_not_a_number(tmp_path, field, value, message):
    """`epochs: true` used to become 1 epoch, silently."""
    document = train_document(train={"epochs": 2, "global_batch_size": 64, field: value})
    with pytest.raises(SpecError, match=re.escape(message)):
        load_spec(write(tmp_path, document))


def test_exponents_without_a_dot_are_numbers_and_lists_still_fill_shapes(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(train_document()).replace("seed: 0", "seed: 0\n  optimizer: {learning_rate: 3e-4}"))
    spec = load_spec(path)
    assert spec.train.optimizer.learning_rate == pytest.approx(3e-4)
    assert spec.data.image_shape == (28, 28, 1)  # a YAML list, taken as the shape tuple


def test_overrides_set_nested_fields_and_list_items(tmp_path):
    spec = load_spec(write(tmp_path, train_document()),
                     ["train.epochs=7", "train.optimizer.learning_rate=3e-4", "augment.0.flip_left_right.p=1.0",
                      "model.family=mlp"])
    assert spec.train.epochs == 7
    assert spec.train.optimizer.learning_rate == pytest.approx(3e-4)
    assert spec.augment[0].p == 1.0
    assert spec.model.family == "mlp"


def test_overrides_are_validated_like_the_file(tmp_path):
    with pytest.raises(SpecError, match="  train.epochs: "):
        load_spec(write(tmp_path, train_document()), ["train.epochs=-1"])
    with pytest.raises(SpecError, match="expected dotted.key=value"):
        apply_overrides({}, ["train.epochs"])
    with pytest.raises(SpecError, match="not an index"):
        apply_overrides({"augment": []}, ["augment.3.p=1"])


def test_output_overrides_storage_and_resolves_relative_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = load_spec(write(tmp_path, train_document()), output="results")
    assert spec.output.storage == os.path.join(str(tmp_path), "results")
    spec = load_spec(write(tmp_path, train_document()), output="s3://bucket/runs")
    assert spec.output.storage == "s3://bucket/runs"


def test_json_schema_is_printed_by_the_job_entrypoint():
    done = subprocess.run([sys.executable, "-m", "jobs", "schema"], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    schema = json.loads(done.stdout)
    assert schema == json.loads(json.dumps(json_schema()))
    kinds = {branch["$ref"].rsplit("/", 1)[-1] for branch in schema["oneOf"]}
    assert kinds == {"TrainJob", "CompressJob", "SweepJob", "EvaluateJob"}
    assert "data" in schema["$defs"]["TrainJob"]["properties"]
    assert schema["discriminator"]["propertyName"] == "kind"


def test_invalid_spec_exits_non_zero_with_the_field(tmp_path):
    path = write(tmp_path, train_document(train={"epochs": 0}))
    done = subprocess.run([sys.executable, "-m", "jobs", path], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
    assert done.returncode == 2
    assert "train.epochs" in done.stderr


def test_validate_document_rejects_non_mapping():
    with pytest.raises(SpecError, match="mapping"):
        validate_document(["kind", "train"])


def sweep_document(**changes) -> dict:
    document = train_document(kind="sweep", name="s")
    del document["model"]
    document.update(changes)
    return document


@pytest.mark.parametrize("change, field, expected", [
    ({"search": {"widths": []}}, "search.widths", "at least one value"),
    ({"search": {"pipelines": []}}, "search.pipelines", "at least 1 item"),
    ({"search": {"widths": [0.5, 0.5]}}, "search.widths", "must not repeat"),
    ({"search": {"widths": {"min": 0.25, "max": 1.0}}}, "search", "a range needs algorithm: optuna"),
    ({"search": {"algorithm": "optuna", "widths": {"min": 1.0, "max": 0.5}}}, "search.widths", "must not exceed"),
    ({"search": {"algorithm": "optuna", "compression": {"clusters": [1]}}}, "search.compression.clusters",
     "0 (none) or >= 2"),
    ({"search": {"pipelines": [{"name": "a"}, {"name": "a"}]}}, "search", "repeated: ['a']"),
    ({"search": {"pipelines": [{"name": "p", "pipeline": [{"prune": {"final_sparsity": 1.2}}]}]}},
     "search.pipelines.0.pipeline.0.prune.final_sparsity", "less than 1"),
    ({"constraints": {"max_size_kb": -1}}, "constraints.max_size_kb", "greater than 0"),
    ({"constraints": {"min_accuracy": 1.5}}, "constraints.min_accuracy", "less than or equal to 1"),
    ({"constraints": {"max_sizekb": 5}}, "constraints.max_sizekb", "Extra inputs"),
    ({"tune": {"max_concurrent_trials": 0}}, "tune.max_concurrent_trials", "greater than or equal to 1"),
    ({"tune": {"trial_driver_cpus": 0}}, "tune.trial_driver_cpus", "greater than 0"),
    ({"tune": {"scheduler": "hyperband"}}, "tune.scheduler", "'fifo' or 'asha'"),
    ({"objective": {"metric": "speed"}}, "objective.metric", "'accuracy'"),
])
def test_sweep_mistakes_name_the_field(tmp_path, change, field, expected):
    with pytest.raises(SpecError) as error:
        load_spec(write(tmp_path, sweep_document(**change)))
    assert f"  {field}:" in str(error.value) and expected in str(error.value), str(error.value)


def test_steps_validate_in_either_form_and_round_trip_through_their_dump():
    from cluster.compression.steps import PruneStep, QATStep, QuantizeStep, parse_steps

    yaml_form = parse_steps([{"prune": {"final_sparsity": 0.8, "exclude": ["logits"]}}, {"qat": None}])
    flat_form = parse_steps([{"technique": "prune", "final_sparsity": 0.8, "exclude": ["logits"]},
                             {"technique": "qat"}])
    assert yaml_form == flat_form
    assert isinstance(yaml_form[0], PruneStep) and yaml_form[0].exclude == ("logits",)
    # QAT preserves what the step before it built, and says so in its dump.
    assert isinstance(yaml_form[1], QATStep) and yaml_form[1].preserve == "sparsity"
    assert parse_steps([step.model_dump(mode="json") for step in yaml_form]) == yaml_form
    assert parse_steps([{"quantize": {"mode": "float16"}}]) == [QuantizeStep(mode="float16")]
    # A prune schedule left open is filled in from the fine-tuning length: ramp over 80 %, 20 mask updates.
    assert PruneStep().scheduled(1000).end_step == 800 and PruneStep().scheduled(1000).frequency == 40
    assert PruneStep(schedule="constant").scheduled(1000).end_step == -1
    assert PruneStep(end_step=10, frequency=3).scheduled(1000) == PruneStep(end_step=10, frequency=3)


@pytest.mark.parametrize("step, field, expected", [
    ({"prune": {"final_sparsity": 1.0}}, "0.prune.final_sparsity", "less than 1"),
    ({"prune": {"initial_sparsity": 0.9, "final_sparsity": 0.5}}, "0.prune", "must not exceed"),
    ({"prune": {"sparsity_m_by_n": [4, 4]}}, "0.prune", "0 < zeros < block"),
    ({"prune": {"exclude": "logits"}}, "0.prune.exclude", "not a string"),
    ({"cluster": {"number_of_clusters": 1}}, "0.cluster.number_of_clusters", "greater than or equal to 2"),
    ({"quantize": {"mode": "int4"}}, "0.quantize.mode", "'int8', 'dynamic_range' or 'float16'"),
    ({"qat": {"preserve": "all"}}, "0.qat.preserve", "'sparsity'"),
    ({"distill": {"student": {"family": "transformer"}}}, "0.distill.student.family", "expected one of bncnn, cnn"),
    ({"sparsify": {}}, "0", "unknown technique 'sparsify'"),
    ({"prune": {}, "qat": {}}, "0", "each entry is one of"),
])
def test_step_mistakes_name_the_field(tmp_path, step, field, expected):
    document = train_document(kind="compress", name="c")
    del document["model"], document["train"]
    document.update(baseline="/nowhere/model.keras", variants=[{"name": "v", "pipeline": [step]}])
    with pytest.raises(SpecError) as error:
        load_spec(write(tmp_path, document))
    assert f"  variants.0.pipeline.{field}:" in str(error.value) and expected in str(error.value), str(error.value)


def test_pipeline_order_is_checked_at_validation(tmp_path):
    document = sweep_document(search={"pipelines": [
        {"name": "p", "pipeline": [{"quantize": {}}, {"prune": {}}]}]})
    with pytest.raises(SpecError, match=r"search.pipelines.0.pipeline: .*step 2 \(prune\): quantize"):
        load_spec(write(tmp_path, document))


def test_schema_documents_every_step_option():
    schema = json.dumps(json_schema())
    for option in ("final_sparsity", "sparsity_m_by_n", "number_of_clusters", "centroid_init", "preserve",
                   "input_type", "temperature", "alpha", "dynamic_range"):
        assert f'"{option}"' in schema, option


def test_validating_a_spec_never_loads_tensorflow():
    code = ("import sys; from cluster.spec import load_spec; load_spec('configs/quickstart.yaml'); "
            "from cluster.cli import main; print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('tensorflow', 'tf_keras', 'tensorflow_model_optimization', 'ray')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


@pytest.mark.parametrize("text, expected", [
    (b"version: 1\nkind: train\nkind: sweep\n", "key 'kind' is given twice"),
    (b"a: &x [1, 2]\nb: *x\n", "aliases (*name) are not allowed"),
    (b"name: caf\xe9\n", "not UTF-8 text (byte 9"),
    (b"#" * 1_000_001, "a spec is at most 1,000,000 bytes"),
])
def test_spec_files_that_do_not_say_what_they_mean_are_refused(tmp_path, text, expected):
    path = tmp_path / "spec.yaml"
    path.write_bytes(text)
    with pytest.raises(SpecError, match=re.escape(expected)):
        load_spec(path)
