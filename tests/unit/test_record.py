"""A record survives its trip through registry tags, and the typed contracts between
processes survive theirs through JSON."""
from __future__ import annotations

import json
import math

from moe_pipeline.execute.training_contracts import TrainingJob, TrainingSummary
from moe_pipeline.state.record import (NEEDS_RETRAIN, RECORD, VALIDATED_AGAINST, Record, UpstreamRef, from_tags,
                                       to_tags)
from moe_pipeline.state.version_spec import VersionSpec


def _record(**changes) -> Record:
    fields = dict(expert="digit", version=3, run_id="r1", spec={"train": {"lr": 0.003}}, spec_hash="s" * 64,
                  code={"stages.digits:has_loop": "c" * 64}, code_hash="h" * 64, data={"digits.label": "d" * 64},
                  data_hash="e" * 64, upstream={"has_loop": UpstreamRef(2, "o" * 64)}, train_seconds=1.25,
                  peak_memory_mb=3.5, metric_name="accuracy", val_metric=0.9632, sha256={"weights.safetensors": "w"},
                  outputs_sha="x" * 64, baseline=0.1)
    fields.update(changes)
    return Record(**fields)


def test_a_record_reads_back_from_its_tags_as_it_was_written():
    record = _record(needs_retrain="stale: SPEC train.lr", outputs_files={"outputs-v/val.safetensors": "f"},
                     outputs_dir="outputs-v")
    back = from_tags(record.expert, record.version, record.run_id, to_tags(record))
    assert back == record


def test_a_validated_version_stands_for_the_upstream_it_was_validated_against_but_keeps_what_it_trained_on():
    record = _record()
    tags = to_tags(record)
    tags[VALIDATED_AGAINST] = json.dumps({"upstream": {"has_loop": {"version": 5, "outputs": "n" * 64}}})
    back = from_tags("digit", 3, "r1", tags)
    assert back.upstream == {"has_loop": UpstreamRef(5, "n" * 64)}
    assert back.trained_upstream == {"has_loop": UpstreamRef(2, "o" * 64)}


def test_a_version_this_project_did_not_write_has_no_record_and_the_mark_is_its_own_tag():
    assert from_tags("x", 1, "r", {"mlflow.note": "someone else's"}) is None
    tags = to_tags(_record())
    assert NEEDS_RETRAIN not in tags and RECORD in tags


def test_the_version_spec_serialises_in_one_form_and_reads_back():
    spec = VersionSpec(spec={"model": {"kind": "mlp", "hidden": [8]}}, in_shape=[1, 8, 8], n_outputs=2,
                       task="classification", blocks=[("digits.image", 0, 64)], micro_batch=64, device="cpu",
                       transforms={"digits.image": {"kind": "minmax", "min": [0.0], "range": [16.0]}},
                       feature_names=None, class_names=["no", "yes"])
    text = spec.to_json()
    assert json.loads(text) == json.loads(json.dumps(json.loads(text), sort_keys=True))  # canonical keys
    back = VersionSpec.from_json(text)
    assert back == spec and back.inputs == ["digits.image"] and back.model_spec().hidden == [8]
    older = {k: v for k, v in json.loads(text).items() if k not in ("transforms", "class_names")}
    assert VersionSpec.model_validate(older).transforms == {}  # a version written before transforms existed


def test_the_training_contracts_round_trip_through_json():
    job = TrainingJob("is_even", {"train": {"lr": 0.01}}, 1, 2, 16)
    assert TrainingJob.from_json(json.loads(json.dumps(job.to_json()))) == job
    summary = TrainingSummary(task="classification", metric="accuracy", history=[{"epoch": 1.0, "val_loss": 0.5}],
                              metrics={"val_accuracy": 0.9}, seconds=0.5, peak_memory_mb=1.0, micro_batch=32,
                              device="cpu", epochs_run=1, baseline=float("nan"), weakest=None)
    back = TrainingSummary.from_json(json.loads(json.dumps(summary.to_json())))
    assert math.isnan(back.baseline) and back.metrics == summary.metrics and back.micro_batch == 32


def test_the_opening_carries_the_validated_pipeline_whole_and_each_sources_yaml_position():
    """The training process validates the same pipeline again from JSON, never from the file."""
    from pathlib import Path

    from moe_pipeline.execute.training_contracts import TrainingOpening
    from moe_pipeline.pipeline.loader import load_pipeline
    from moe_pipeline.pipeline.spec import Pipeline

    root = Path(__file__).resolve().parents[2]
    for name in ("digits.yaml", "planted.yaml"):
        loaded = load_pipeline(root / "pipelines" / name)
        opening = TrainingOpening.from_json(json.loads(json.dumps(
            TrainingOpening.of(loaded, ["x"]).to_json())))
        assert Pipeline.model_validate(opening.pipeline) == loaded.pipeline
        assert opening.source_positions == {s: loaded.where("sources", s) for s in loaded.pipeline.sources}
        assert all(p.startswith(f"{loaded.path}:") for p in opening.source_positions.values())
        assert opening.experts == ["x"] and opening.path == str(loaded.path)


def test_a_record_tag_edited_into_invalid_json_is_one_clear_error_naming_the_version():
    import pytest

    from moe_pipeline.errors import RegistryError

    for damage in ("{not json", json.dumps({"spec": {}})):
        tags = {**to_tags(_record()), RECORD: damage}
        with pytest.raises(RegistryError, match=r"expert 'digit' v3: its record tags"):
            from_tags("digit", 3, "r1", tags)
