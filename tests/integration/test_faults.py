"""Faults with real processes: kill -9 at each phase of a run, SIGINT/SIGTERM, user code that
fails, training that diverges, corrupt artifacts. After each, the next `run` converges: every
expert fresh, exactly one `current` version each, nothing half-made, nothing left RUNNING.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import ROOT, cli, client_once_created

# Runs the CLI in a real process that kills itself (SIGKILL: nothing unwinds) at one registry
# call: before it (`before`) or right after it (`after`), the n-th time it happens.
KILLER = """
import os, signal, sys
import moe_pipeline.registry.reader as store
when, what, nth = sys.argv[1], sys.argv[2], int(sys.argv[3])
seen = [0]
original = store.RegistryReader._call
def _call(self, label, fn, *args, **kwargs):
    hit = label == what or (what.startswith("set tag ") and label == "set tag" and args[-2] in what[8:].split("|"))
    seen[0] += hit
    if hit and seen[0] == nth and when == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    result = original(self, label, fn, *args, **kwargs)
    if hit and seen[0] == nth and when == "after":
        os.kill(os.getpid(), signal.SIGKILL)
    return result
store.RegistryReader._call = _call
from moe_pipeline.cli.app import run_cli
sys.exit(run_cli(sys.argv[4:]))
"""


@pytest.fixture
def cut_tiny(tiny: Path) -> Path:
    """The tiny pipeline with a cutoff on `digit` so loose that a check always keeps it."""
    text = tiny.read_text()
    assert 'cutoff: "off"' in text
    tiny.write_text(text.replace('cutoff: "off"', "cutoff: {mean_abs: 1.0, agreement: 0.0, metric_drop: 1.0}"))
    return tiny


def env_for(tmp_path: Path, registry_uri: str) -> dict[str, str]:
    return {**os.environ, "MLFLOW_TRACKING_URI": registry_uri,
            "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}


def killed_run(tmp_path: Path, registry_uri: str, when: str, what: str, *args: str, nth: int = 1) -> int:
    proc = subprocess.run([sys.executable, "-c", KILLER, when, what, str(nth), *map(str, args)],
                          env=env_for(tmp_path, registry_uri), capture_output=True, text=True, timeout=300)
    return proc.returncode


def assert_converged(path: Path, registry_uri: str, capsys) -> dict:
    """The next run exits 0; then every expert is fresh with one whole current version, no run RUNNING."""
    assert cli("run", path) == 0
    capsys.readouterr()
    assert cli("status", path, "--json", "--verify") == 0
    experts = {e["name"]: e for e in json.loads(capsys.readouterr().out)["experts"]}
    assert {e["status"] for e in experts.values()} == {"fresh"}, experts
    client = MlflowClient(registry_uri, registry_uri)
    for name in experts:
        mv = client.get_model_version_by_alias(f"tiny.{name}", "current")
        assert "moe.record" in mv.tags  # whole: registered with its record
        assert client.get_run(mv.run_id).info.status == "FINISHED"
    experiment = client.get_experiment_by_name("tiny")
    assert not client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'")
    return experts


@pytest.mark.parametrize("when, what", [
    ("before", "log artifacts"),  # during training: nothing uploaded yet
    ("before", "create model version"),  # artifacts uploaded, nothing registered
    ("before", "set alias"),  # registered, `current` not moved yet
    ("after", "set alias"),  # current moved, run not finished
])
@pytest.mark.reliability("kill -9 in a run")
def test_kill_9_at_each_phase_of_a_run_then_the_next_run_converges(tiny: Path, registry_uri: str, tmp_path: Path,
                                                                   when: str, what: str, capsys):
    assert killed_run(tmp_path, registry_uri, when, what, "run", tiny, "--quiet", nth=2) == -signal.SIGKILL
    client = MlflowClient(registry_uri, registry_uri)
    experiment = client.get_experiment_by_name("tiny")
    assert client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'")  # the killed one
    assert_converged(tiny, registry_uri, capsys)
    versions = {mv.name: mv.version for mv in client.search_model_versions("name LIKE 'tiny.%'")}
    # the second expert's debris (a version never made current) is removed; nothing trains twice
    assert sorted(client.search_model_versions("name = 'tiny.has_loop'"), key=lambda m: int(m.version))
    assert all(len(client.search_model_versions(f"name = '{name}'")) == 1 for name in versions), versions
    runs = client.search_runs([experiment.experiment_id])
    assert sum(r.info.status == "FAILED" for r in runs) == (0 if when == "after" else 1)


@pytest.mark.reliability("kill -9 in a cutoff check")
def test_kill_9_between_a_cutoff_checks_two_writes_never_leaves_a_false_fresh(cut_tiny: Path, registry_uri: str,
                                                                              tmp_path: Path, capsys):
    assert cli("run", cut_tiny) == 0
    assert cli("run", cut_tiny, "is_even", "--force") == 0
    capsys.readouterr()
    # new upstream version: `digit` is checked; die right after the first of its two tag writes
    assert cli("run", cut_tiny, "--dry-run") == 0
    assert "retrain or keep" in capsys.readouterr().out
    assert killed_run(tmp_path, registry_uri, "after", "set tag moe.outputs|moe.validated_against", "run", cut_tiny, "--quiet") \
        == -signal.SIGKILL
    capsys.readouterr()
    assert cli("status", cut_tiny, "--json") == 0
    digit = {e["name"]: e for e in json.loads(capsys.readouterr().out)["experts"]}["digit"]
    assert digit["status"] == "stale", digit  # never "fresh" over half-written tags
    experts = assert_converged(cut_tiny, registry_uri, capsys)
    assert experts["digit"]["version"] == 1  # kept by the cutoff, not retrained
    assert experts["digit"]["validated"]["upstream"]["is_even"] == 2


@pytest.mark.reliability("signals")
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_during_training_says_what_stopped_and_registers_nothing(tiny: Path, registry_uri: str,
                                                                          tmp_path: Path, sig, code):
    slow = tiny.read_text().replace("epochs: 3,", "epochs: 2000,", 1)  # has_loop trains long enough to be hit
    tiny.write_text(slow)
    proc = subprocess.Popen([sys.executable, "-m", "moe_pipeline", "run", str(tiny), "--quiet"],
                            env=env_for(tmp_path, registry_uri), stderr=subprocess.PIPE, text=True)
    client = client_once_created(registry_uri)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait for has_loop's training run to exist
        experiment = client.get_experiment_by_name("tiny")
        if experiment and client.search_runs([experiment.experiment_id]):
            break
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert "interrupted: has_loop was training; nothing registered for it" in err
    assert "Traceback" not in err
    assert client.search_model_versions("name LIKE 'tiny.%'") == []
    assert [r.info.status for r in client.search_runs([experiment.experiment_id])] == ["FAILED"]
    assert list(Path(tempfile.gettempdir()).glob(f"moe-{proc.pid}-*")) == []  # scratch folders removed


@pytest.mark.reliability("corrupt artifacts")
def test_corrupt_or_deleted_artifact_is_stale_integrity_and_run_repairs_it(tiny: Path, registry_uri: str,
                                                                            capsys):
    from moe_pipeline.execute.view import View
    from moe_pipeline.pipeline.loader import load_pipeline

    assert cli("run", tiny) == 0
    ws = View(load_pipeline(tiny), fast_reads=False)
    weights = ws.artifact(ws.record("is_even"), "weights.safetensors")
    outputs = ws.artifact(ws.record("has_loop"), "outputs/val.safetensors")
    weights.write_bytes(weights.read_bytes()[:-3] + b"xyz")
    outputs.unlink()
    capsys.readouterr()
    assert cli("status", tiny, "--json") == 0  # without --verify: the cheap read, no files hashed
    assert {e["status"] for e in json.loads(capsys.readouterr().out)["experts"]} == {"fresh"}
    assert cli("status", tiny, "--json", "--verify", "--check") == 1
    experts = {e["name"]: e for e in json.loads(capsys.readouterr().out)["experts"]}
    assert experts["is_even"]["status"] == "stale"
    assert experts["is_even"]["reasons"][0]["kind"] == "INTEGRITY"
    assert "weights.safetensors" in experts["is_even"]["reasons"][0]["detail"]
    assert experts["has_loop"]["reasons"][0]["kind"] == "INTEGRITY"
    assert "missing" in experts["has_loop"]["reasons"][0]["detail"]
    assert experts["digit"]["status"] == "pending"
    experts = assert_converged(tiny, registry_uri, capsys)
    assert experts["is_even"]["version"] == 2 and experts["has_loop"]["version"] == 2


CUSTOM = '''
import torch
from torch import nn


class Exploding(nn.Module):
    def __init__(self, in_shape, out_features):
        super().__init__()
        self.body = nn.Flatten()
        self.head = nn.Linear(64, out_features)

    def forward(self, x):
        return self.head(self.body(x)) * float("nan")


class BadInit(nn.Module):
    def __init__(self, in_shape, out_features):
        raise ValueError("no such layer size")


class BadForward(nn.Module):
    def __init__(self, in_shape, out_features):
        super().__init__()
        self.body = nn.Flatten()
        self.head = nn.Linear(64, out_features)

    def forward(self, x):
        raise KeyError("forgot a buffer")


def two_columns(label):
    return torch.stack([label, label], dim=1)


def nan_target(label):
    return torch.where(label == 3, float("nan"), label.float())


def raises(label):
    raise ZeroDivisionError("division by zero")


def returns_none(label):
    return None


def huge_ids(label):
    return label * 100_000_000
'''


BEFORE_TRAINING = {  # what building the inputs, the target or the model finds
    "faulty:BadInit() raised ValueError: no such layer size", "kernel_size 9 is larger than the 8x8 input",
    "unknown key 'bogus'", "one class id per row, shape (n,); got (1797, 2)", "holds NaN or inf",
    "faulty:raises raised ZeroDivisionError", "returned NoneType", "class ids must be 0..C-1",
    "over resources.max_memory_gb"}

USER_CODE_FAULTS = [
    ({"model": "{kind: custom, class: 'faulty:Exploding'}"}, "the training loss became nan in epoch 1"),
    ({"model": "{kind: custom, class: 'faulty:BadInit'}"}, "faulty:BadInit() raised ValueError: no such layer size"),
    ({"model": "{kind: custom, class: 'faulty:BadForward'}"}, "training raised KeyError: 'forgot a buffer'"),
    ({"model": "{kind: mlp, hidden: [16], bogus: 1}"}, "unknown key 'bogus'"),
    ({"model": "{kind: cnn, channels: [4], kernel_size: 9}"}, "kernel_size 9 is larger than the 8x8 input"),
    ({"model": "{kind: mlp, hidden: [60000, 60000]}"}, "over resources.max_memory_gb"),
    ({"target": "{from: digits.label, fn: 'faulty:two_columns'}"}, "one class id per row, shape (n,); got (1797, 2)"),
    ({"target": "{from: digits.label, fn: 'faulty:nan_target'}", "task": "regression"}, "holds NaN or inf"),
    ({"target": "{from: digits.label, fn: 'faulty:raises'}"}, "faulty:raises raised ZeroDivisionError"),
    ({"target": "{from: digits.label, fn: 'faulty:returns_none'}"}, "returned NoneType"),
    ({"target": "{from: digits.label, fn: 'faulty:huge_ids'}"}, "class ids must be 0..C-1"),
]


def _with_faulty_is_even(tiny: Path, tmp_path: Path, edit: dict[str, str]) -> None:
    """is_even's keys in `edit` replaced; the faulty code in a module beside the pipeline."""
    (tmp_path / "faulty.py").write_text(CUSTOM)
    lines = [f"    {k}: {v}" for k, v in edit.items()]
    text = tiny.read_text()
    start = text.index("  is_even:\n")
    block_end = text.index("  digit:\n")
    block = [ln for ln in text[start:block_end].splitlines() if not any(ln.startswith(f"    {k}:") for k in edit)]
    tiny.write_text(text[:start] + "\n".join(block + lines) + "\n" + text[block_end:])


@pytest.mark.parametrize("edit, fragment", USER_CODE_FAULTS)
@pytest.mark.reliability("failing user code")
def test_failures_in_user_code_or_training_are_one_message_at_the_experts_key(tiny: Path, tmp_path: Path, edit,
                                                                               fragment):
    """At the functions that raise them: a trainer's `prepare` (inputs, target, model, budget:
    before `run` opens a training run) or its `train`, each error at is_even's YAML key."""
    from moe_pipeline.data.store import DataStore
    from moe_pipeline.errors import MoeError, PipelineError
    from moe_pipeline.execute.located import located
    from moe_pipeline.execute.training_contracts import TrainingJob
    from moe_pipeline.execute.training_process import TrainingHere
    from moe_pipeline.pipeline.loader import load_pipeline, make_importable
    from moe_pipeline.state.fingerprint import fingerprint, training_seeds

    _with_faulty_is_even(tiny, tmp_path, edit)
    try:
        loaded = load_pipeline(tiny)
    except PipelineError as exc:  # a schema error: FILE:LINE:COL from the loader itself
        assert fragment in str(exc) and str(exc).startswith(f"{tiny}:"), str(exc)
        return
    make_importable(loaded.path)
    store = DataStore(loaded.pipeline, tmp_path, None, loaded.where)
    here = TrainingHere(loaded.pipeline, store)
    spec = fingerprint(loaded.pipeline, "is_even", store.field_hash).spec
    job = TrainingJob("is_even", spec, *training_seeds(spec), 16)
    phase = "prepare"
    with pytest.raises(MoeError) as info:
        here.prepare("is_even", {}, lambda key: located(loaded, "is_even", key))
        phase = "train"
        (tmp_path / "version").mkdir()
        here.train(job, tmp_path / "version", lambda key: located(loaded, "is_even", key), None)
    assert fragment in str(info.value), str(info.value)
    assert str(info.value).startswith(f"{tiny}:") and "expert 'is_even'" in str(info.value)
    assert phase == ("prepare" if fragment in BEFORE_TRAINING else "train")


@pytest.mark.parametrize("edit, fragment", [USER_CODE_FAULTS[i] for i in (1, 8, 0)])  # model, target, training
@pytest.mark.reliability("failing user code")
def test_failing_user_code_through_run_is_one_message_and_registers_nothing(tiny: Path, registry_uri: str,
                                                                            tmp_path: Path, edit, fragment, capsys):
    """One `run` per kind: a model that cannot be built and a target that raises leave no run at
    all; a loss that diverges leaves its run FAILED. Nothing is registered."""
    _with_faulty_is_even(tiny, tmp_path, edit)
    capsys.readouterr()
    assert cli("run", tiny, "is_even") == 2
    err = capsys.readouterr().err
    assert fragment in err, err
    assert "Traceback" not in err
    assert f"{tiny}:" in err and "expert 'is_even'" in err
    client = MlflowClient(registry_uri, registry_uri)
    assert client.search_model_versions("name = 'tiny.is_even'") == []
    experiment = client.get_experiment_by_name("tiny")
    if fragment in BEFORE_TRAINING:  # found before a run was opened: no run, no experiment, nothing to clean
        assert experiment is None or client.search_runs([experiment.experiment_id]) == []
    else:
        assert experiment is not None
        runs = client.search_runs([experiment.experiment_id])
        assert runs and all(r.info.status == "FAILED" for r in runs)


@pytest.mark.reliability("usage errors")
def test_usage_errors_are_messages_not_tracebacks(tmp_path: Path):
    for args in ([], ["nonsense"], ["run"], ["dag", "-f", "png", "pipelines/digits.yaml"], ["status", "--bogus", "x"]):
        proc = subprocess.run([sys.executable, "-m", "moe_pipeline", *args], cwd=ROOT, capture_output=True, text=True)
        assert proc.returncode == 2, (args, proc.returncode)
        assert "Traceback" not in proc.stderr, args
        assert "Usage" in proc.stdout + proc.stderr, args
    version = subprocess.run([sys.executable, "-m", "moe_pipeline", "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("moe-pipeline ")


@pytest.mark.reliability("signals")
def test_ctrl_c_stops_a_long_inspect_within_a_second_naming_where_it_was(tiny: Path, registry_uri: str,
                                                                         tmp_path: Path):
    """`inspect --opacity` retrains for minutes (in worker processes where there are cores for
    them): Ctrl-C ends it at once, saying which step it stopped at, without a traceback, and no
    worker is left running."""
    assert cli("run", tiny) == 0
    # wait until the retrainings have begun: here "init run 3 of 200", in workers "2 of 200 runs done"
    code, waited, err = _signalled(["inspect", str(tiny), "has_loop", "--opacity", "init", "--runs", "200"],
                                   env_for(tmp_path, registry_uri),
                                   lambda line: "opacity: init run 3 of 200" in line or "opacity: 2 of 200 runs" in line,
                                   signal.SIGINT)
    # promptly, not after the 197 trainings left (about 1 s each); the second itself is measured by hand (README)
    assert waited < 5.0
    assert code == 130, err
    assert "interrupted: stopped at inspect has_loop: opacity: " in err and "Traceback" not in err
    deadline = time.monotonic() + 5  # PR_SET_PDEATHSIG, or the pool's own kill: gone within moments
    while _workers() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _workers() == []


def _workers() -> list[int]:
    """Opacity worker processes still running (from /proc)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if b"moe_pipeline.inspect.opacity_workers" in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return found


def _signalled(args: list[str], env: dict, ready, sig: int) -> tuple[int, float, str]:
    """Start `moe-pipeline ARGS`, send `sig` once a line of its stderr (one per step in a pipe) is
    `ready`; its exit code, the seconds from the signal to its end, and all it wrote to stderr."""
    proc = subprocess.Popen([sys.executable, "-m", "moe_pipeline", *args], env=env, stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True)
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if ready(line):
            break
    sent = time.monotonic()
    proc.send_signal(sig)
    seen.append(proc.stderr.read())
    proc.wait(timeout=30)
    return proc.returncode, time.monotonic() - sent, "".join(seen)


@pytest.mark.reliability("signals")
def test_sigterm_stops_report_promptly_and_writes_no_overview(tiny: Path, registry_uri: str, tmp_path: Path):
    """`report` inspects every expert before it draws the overview: SIGTERM during the first
    expert's report ends it at once (exit 143), naming where it was, and the overview is not written."""
    assert cli("run", tiny) == 0
    out = tmp_path / "reports"
    # the first expert's report has begun
    code, waited, err = _signalled(["report", str(tiny), "--out", str(out)], env_for(tmp_path, registry_uri),
                                   lambda line: line.startswith("report: "), signal.SIGTERM)
    assert waited < 5.0
    assert code == 143, err
    assert "interrupted: stopped at report: " in err and "Traceback" not in err
    assert not list(out.rglob("overview.html"))


@pytest.mark.reliability("signals")
@pytest.mark.parametrize("command,sig,code", [("export", signal.SIGTERM, 143), ("explain", signal.SIGINT, 130)])
def test_a_signal_during_export_or_explain_ends_it_at_once_and_writes_nothing(tiny: Path, registry_uri: str,
                                                                               tmp_path: Path, command: str, sig: int,
                                                                               code: int):
    """SIGTERM during `export`, Ctrl-C during `explain --html`, once its first step has begun: the
    exit code of the signal, where it stopped, and no export folder or page, not even a part."""
    assert cli("run", tiny, "--quiet") == 0
    out = tmp_path / "out"
    args = ["export", str(tiny), "--out", str(out)] if command == "export" else \
        ["explain", str(tiny), "--split", "test", "--row", "3", "--html", str(tmp_path / "row.html")]
    got, waited, err = _signalled(args, env_for(tmp_path, registry_uri), lambda line: line.startswith(f"{command}: "),
                                  sig)
    assert got == code, err
    assert waited < 5.0 and "Traceback" not in err and f"interrupted: stopped at {command}: " in err
    assert not out.exists() and not (tmp_path / "row.html").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".") and "partial" in p.name]


def _children(pid: int) -> list[int]:
    """Processes whose parent is `pid` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.reliability("kill -9 in a run")
def test_a_training_process_killed_by_sigkill_is_named_with_the_peak_it_reached(tiny: Path, registry_uri: str,
                                                                                tmp_path: Path, capsys):
    """What a user sees when the kernel's out-of-memory killer ends the training process: what it
    was doing and how much memory it had reached, not "ended unexpectedly"; the next run converges."""
    import time

    quick = tiny.read_text()
    tiny.write_text(quick.replace("epochs: 3, batch_size: 128", "epochs: 400, batch_size: 8", 1))
    run = subprocess.Popen([sys.executable, "-m", "moe_pipeline", "run", str(tiny)], env=env_for(tmp_path, registry_uri),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    for line in run.stderr:  # progress goes to stderr in a pipe: training has begun
        if "training has_loop" in line or time.monotonic() > deadline:
            break
    (trainer,) = _children(run.pid)
    os.kill(trainer, signal.SIGKILL)
    _, err = run.communicate(timeout=120)
    assert run.returncode == 2, err[-2000:]
    assert "the training process was killed (SIGKILL) while training has_loop; it had reached" in err
    assert "GiB resident" in err and "Traceback" not in err
    tiny.write_text(quick)
    assert_converged(tiny, registry_uri, capsys)
