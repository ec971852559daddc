"""The Ray executor on a real local Ray cluster (one per test session, `ray start --head`).

Independent experts train at the same time, the weights equal the sequential run's bit for
bit (same seeds, same `num_cpus`), a failing expert fails only its descendants, and a GPU
request on a cluster without GPUs is refused at submission.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from mlflow.tracking import MlflowClient

from tests.conftest import cli
from tests.integration.test_concurrency import env_for

BROKEN = '''

def broken(label):
    raise ValueError("this target is broken on purpose")
'''


def ray_run(pipeline: Path, tmp_path: Path, uri: str, address: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "moe_pipeline", "run", str(pipeline), "--quiet", "--executor", "ray",
                           "--address", address, *args], env=env_for(tmp_path, uri), capture_output=True, text=True,
                          timeout=600)


def one_core_each(pipeline: Path, epochs: dict[str, int]) -> Path:
    text = pipeline.read_text() + "resources: {num_cpus: 1}\n"
    for expert, n in epochs.items():  # long enough that the two independent ones overlap on the cluster
        head, _, tail = text.partition(f"  {expert}:\n")
        text = head + f"  {expert}:\n" + tail.replace("epochs: 3,", f"epochs: {n},", 1)
    pipeline.write_text(text)
    return pipeline


def records(uri: str) -> dict:
    from moe_pipeline.registry.reader import RegistryReader

    return {name: v.current_record for name, v in RegistryReader(uri, "tiny").snapshot().items()}


def test_independent_experts_overlap_on_ray_and_weights_equal_the_sequential_runs(tiny: Path, tmp_path: Path,
                                                                                 ray_cluster: str, capsys):
    pipeline = one_core_each(tiny, {"has_loop": 40, "is_even": 300})
    assert cli("run", pipeline, "--quiet") == 0  # sequential, into the fixture's registry (MLFLOW_TRACKING_URI)
    uri = f"sqlite:///{tmp_path / 'on-ray' / 'mlflow.db'}"
    done = ray_run(pipeline, tmp_path, uri, ray_cluster)
    assert done.returncode == 0, done.stdout + done.stderr
    here, there = records(os.environ["MLFLOW_TRACKING_URI"]), records(uri)
    assert sorted(there) == ["digit", "has_loop", "is_even"]
    for expert in there:  # same seeds, same threads: the same bits
        assert there[expert].sha256["weights.safetensors"] == here[expert].sha256["weights.safetensors"], expert
        assert there[expert].outputs_sha == here[expert].outputs_sha, expert
    client = MlflowClient(uri, uri)
    runs = {r.data.tags["moe.expert"]: r.info for r in
            client.search_runs([client.get_experiment_by_name("tiny").experiment_id])}
    a, b = runs["has_loop"], runs["is_even"]
    assert max(a.start_time, b.start_time) < min(a.end_time, b.end_time), (a, b)  # trained at the same time
    assert runs["digit"].start_time >= max(a.end_time, b.end_time)  # after both of its upstreams


def test_a_failing_expert_fails_its_descendants_while_independent_branches_finish(tiny: Path, tmp_path: Path,
                                                                                  registry_uri: str, ray_cluster: str):
    module = next(tmp_path.glob("tiny_targets_*.py"))
    module.write_text(module.read_text() + BROKEN)
    tiny.write_text(tiny.read_text() + textwrap.indent(textwrap.dedent(f"""
        bad:
          inputs: [digits.image]
          target: {{from: digits.label, fn: "{module.stem}:broken"}}
          model: {{kind: mlp, hidden: [8]}}
          train: {{epochs: 2, batch_size: 128}}
        after_bad:
          inputs: [bad.probs]
          target: digits.label
          model: {{kind: mlp, hidden: [8]}}
          train: {{epochs: 2, batch_size: 128}}
        """), "  "))  # `experts:` is the file's last key: these two join it
    done = ray_run(tiny, tmp_path, registry_uri, ray_cluster)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert "bad: " in done.stderr and "this target is broken on purpose" in done.stderr, done.stderr
    assert "not run: after_bad (upstream bad failed)" in done.stderr, done.stderr
    registered = records(registry_uri)
    assert sorted(n for n, r in registered.items() if r is not None) == ["digit", "has_loop", "is_even"]
    assert "has_loop" in done.stdout  # what finished is shown


def test_a_gpu_request_on_a_cluster_without_gpus_is_refused_at_submission(tiny: Path, tmp_path: Path,
                                                                          registry_uri: str, ray_cluster: str):
    tiny.write_text(tiny.read_text() + "resources: {num_gpus: 1}\n")
    done = ray_run(tiny, tmp_path, registry_uri, ray_cluster)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "asks for num_gpus=1, but the Ray cluster at" in done.stderr and "has 0 in all" in done.stderr, done.stderr
    assert records(registry_uri) == {}  # nothing trained, nothing pending forever
