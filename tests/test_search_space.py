"""The searched space: Optuna's define-by-run space, candidates, their pipelines and the size bound."""

import optuna

from cluster.compression.steps import ClusterStep, PruneStep, QuantizeStep
from cluster.spec import SearchSpace
from cluster.tuning.search import Candidate, DefineSpace, candidate_of, seed_points
from cluster.tuning.space import Scale

SPACE = SearchSpace(algorithm="optuna", families=["cnn", "dscnn"], widths={"min": 0.25, "max": 1.0, "step": 0.25},
                    depths={"min": 2, "max": 3},
                    compression={"sparsity": {"min": 0.5, "max": 0.9}, "structured": True, "clusters": [0, 16],
                                 "quantize": ["none", "int8", "dynamic_range"], "fine_tune_epochs": [1, 3],
                                 "distill": True})


def sampled(space: SearchSpace, count: int) -> list[dict]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=1))
    params = []
    for _ in range(count):
        trial = study.ask()
        DefineSpace(space)(trial)
        params.append(dict(trial.params))
        study.tell(trial, [0.5, 1000.0])
    return params


def test_every_sampled_candidate_lies_in_the_space_and_builds_a_valid_pipeline():
    seen_prune, seen_quantize, seen_teachers = set(), set(), set()
    for params in sampled(SPACE, 60):
        candidate = candidate_of(params, SPACE)
        assert candidate.scale.family in ("cnn", "dscnn")
        assert candidate.scale.width in (0.25, 0.5, 0.75, 1.0) and candidate.scale.depth in (2, 3)
        assert candidate.sparsity == -1 or candidate.sparsity == 0 or 0.5 <= candidate.sparsity <= 0.9
        seen_prune.add(params["prune"])
        seen_quantize.add(candidate.quantize)
        techniques = [step.technique for step in candidate.steps]
        # Fixed order: distill -> prune -> cluster -> quantize, each only when chosen.
        assert techniques == sorted(techniques, key=["distill", "prune", "cluster", "quantize"].index)
        assert ("quantize" in techniques) == (candidate.quantize != "none")
        assert ("distill" in techniques) == (candidate.teacher is not None)
        assert candidate.variant.name.startswith(candidate.variant.scale.name)
        seen_teachers.add(candidate.teacher)
    assert seen_prune == {"none", "ratio", "2:4"} and seen_quantize == {"none", "int8", "dynamic_range"}
    assert seen_teachers == {None, Scale("cnn", 1.0, 3), Scale("dscnn", 1.0, 3)}


def test_a_dimension_left_closed_is_never_sampled():
    closed = SearchSpace(algorithm="optuna", widths=[0.5], depths=[2],
                         compression={"sparsity": None, "quantize": ["int8"]})
    for params in sampled(closed, 10):
        assert params["prune"] == "none" and "sparsity" not in params and params["quantize"] == "int8"
        assert params["width"] == 0.5 and params["family"] == "cnn"


def test_candidate_steps_and_names():
    scale = Scale("cnn", 0.5, 2)
    pruned = Candidate(scale, sparsity=0.85, clusters=16, quantize="int8", fine_tune_epochs=2, exclude=("logits",))
    assert pruned.steps == (PruneStep(final_sparsity=0.85, exclude=("logits",)),
                            ClusterStep(number_of_clusters=16, preserve_sparsity=True, exclude=("logits",)),
                            QuantizeStep(mode="int8"))
    assert pruned.variant.name == "cnn-w0.5-d2-p0.85-c16-int8-e2"
    structured = Candidate(scale, sparsity=-1, clusters=0, quantize="dynamic_range", fine_tune_epochs=1)
    assert structured.steps[0].sparsity_m_by_n == (2, 4) and structured.label == "2of4-dr-e1"
    plain = Candidate(scale, sparsity=0, clusters=0, quantize="none", fine_tune_epochs=3)
    assert plain.steps == () and plain.variant.is_float and plain.label == "float"
    assert Candidate(scale, 0, 0, "float16", 3).label == "float16"  # nothing fine-tuned: no epochs in the name


def test_seed_points_are_the_smallest_scale_pruned_and_quantized_plain_and_distilled():
    plain, distilled = (candidate_of(point, SPACE) for point in seed_points(SPACE))
    for candidate in (plain, distilled):
        assert candidate.scale == Scale("cnn", 0.25, 2)
        assert candidate.sparsity == 0.8 and candidate.quantize == "int8" and candidate.fine_tune_epochs == 3
    assert plain.teacher is None and distilled.teacher == Scale("cnn", 1.0, 3)
    assert len(seed_points(SPACE.model_copy(update={"compression": SPACE.compression.model_copy(
        update={"distill": False})}))) == 1


def test_a_distilled_candidate_is_a_student_built_from_the_largest_scale():
    from cluster.compression.steps import DistillStep
    from cluster.spec import SearchSpace
    from cluster.tuning.search import largest_scale

    space = SearchSpace.model_validate({
        "algorithm": "optuna", "family": "bncnn", "widths": {"min": 0.25, "max": 1.0, "step": 0.25},
        "depths": {"min": 2, "max": 3}, "compression": {"quantize": ["int8"], "distill": True}})
    assert largest_scale(space, "bncnn") == Scale("bncnn", 1.0, 3)
    config = {"family": "bncnn", "width": 0.25, "depth": 3, "prune": "none", "clusters": 0, "quantize": "int8",
              "fine_tune_epochs": 2, "distill": True}
    candidate = candidate_of(config, space)
    assert candidate.teacher == Scale("bncnn", 1.0, 3) and candidate.fine_tuned
    variant = candidate.variant
    assert variant.scale == candidate.teacher, "the pipeline starts from the teacher's model"
    assert variant.name == "bncnn-w1-d3-kd-bncnn-w0.25-d3-int8"
    distill, quantize = variant.pipeline
    assert isinstance(distill, DistillStep) and (distill.student.width, distill.student.depth) == (0.25, 3)
    assert quantize == QuantizeStep(mode="int8")
    # The largest scale distilled into itself is just that scale.
    assert candidate_of({**config, "width": 1.0}, space).teacher is None
    assert candidate_of({**config, "distill": False}, space).variant.name == "bncnn-w0.25-d3-int8"
