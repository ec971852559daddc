"""A stored version's custom class is imported only from the project's own code: a spec.json
edited to name some other module is refused before that module runs."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from moe_pipeline.errors import IntegrityError
from moe_pipeline.training.rebuild import check_code_origin


@pytest.mark.reliability("code outside the project")
def test_a_class_of_the_project_passes_and_one_from_elsewhere_is_refused_unimported(tmp_path: Path, monkeypatch,
                                                                                  request):
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    tag = abs(hash(request.node.nodeid))
    (project / f"ours_{tag}.py").write_text("class Net: pass\n")
    marker = tmp_path / "imported"
    (elsewhere / f"theirs_{tag}.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass Net: pass\n")
    (project / f"pkg_{tag}").mkdir()
    (project / f"pkg_{tag}" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(elsewhere))
    monkeypatch.syspath_prepend(str(project))

    check_code_origin(f"ours_{tag}:Net", project)
    check_code_origin(f"pkg_{tag}.models:Net", project)  # a package of the project: its folder is inside
    with pytest.raises(IntegrityError) as info:
        check_code_origin(f"theirs_{tag}:Net", project)
    assert f"'theirs_{tag}:Net'" in str(info.value) and str(elsewhere) in str(info.value)
    assert not marker.exists() and f"theirs_{tag}" not in sys.modules  # refused before it ran
    with pytest.raises(IntegrityError):
        check_code_origin("json.decoder:JSONDecoder", project)  # the standard library is not the project's


@pytest.mark.reliability("code outside the project")
def test_the_view_lets_the_pipeline_name_a_class_from_outside(tmp_path: Path):
    """What the pipeline file itself names was chosen by its author: only spec.json is distrusted."""
    from moe_pipeline.training.rebuild import load_version_model

    class Saved:  # the part of a VersionSpec that rebuilding reads
        in_shape, n_outputs = (4,), 2

        def model_spec(self):
            from moe_pipeline.pipeline.spec import CustomModel

            return CustomModel.model_validate({"kind": "custom", "class": "json.decoder:JSONDecoder"})

    with pytest.raises(IntegrityError):
        load_version_model(Saved(), tmp_path / "w.safetensors", tmp_path)
    # named by the pipeline: the check passes, and building the model is what fails (JSONDecoder is no network)
    from moe_pipeline.errors import MoeError

    with pytest.raises(MoeError) as info:
        load_version_model(Saved(), tmp_path / "w.safetensors", tmp_path, frozenset({"json.decoder:JSONDecoder"}))
    assert not isinstance(info.value, IntegrityError)


NET = """import torch.nn as nn


class Net(nn.Module):
    def __init__(self, in_shape, out_features):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(in_shape[0], 8), nn.ReLU())
        self.head = nn.Linear(8, out_features)

    def forward(self, x):
        return self.head(self.body(x))
"""

LOAD = """
import json, sys, numpy as np
from pathlib import Path
from moe_pipeline.serve.system import System
try:
    system = System.load(Path(sys.argv[1]))
except Exception as exc:
    print("refused:", type(exc).__name__, exc)
else:
    x = np.asarray(json.loads(sys.argv[2]), dtype=np.float32)
    print("probs", json.dumps(system.outputs({"s.x": x}, keys=("probs",))["e"]["probs"].tolist()))
"""


@pytest.mark.reliability("code outside the project")
def test_an_export_carries_its_custom_class_and_loads_it_only_from_its_own_code(tmp_path: Path, monkeypatch, request):
    """Exported from a project with a custom model class, the system loads in a fresh process
    started elsewhere without the project on its path and answers what it answered at export;
    a spec.json rewritten (with system.json's sha256 to match) to name a module outside the
    export's code/ folder is refused before that module runs."""
    import hashlib
    import json
    import os
    import subprocess

    import torch

    from moe_pipeline.serve.system import Pinned, System
    from moe_pipeline.state.version_spec import VersionSpec
    from moe_pipeline.training.models import build_model

    tag = abs(hash(request.node.nodeid))
    project, elsewhere, export = tmp_path / "project", tmp_path / "elsewhere", tmp_path / "export"
    project.mkdir()
    elsewhere.mkdir()
    (project / f"nets_{tag}.py").write_text(NET)
    monkeypatch.syspath_prepend(str(project))
    saved = VersionSpec(spec={"model": {"kind": "custom", "class": f"nets_{tag}:Net"}}, in_shape=[4], n_outputs=2,
                        task="classification", blocks=[("s.x", 0, 4)])
    torch.manual_seed(0)
    model = build_model(saved.model_spec(), [4], 2).eval()
    System("p", {"e": Pinned("e", 1, saved, model, {})}, ["e"], {"s.x": {"shape": [4], "dtype": "float32"}}).save(export)
    assert (export / "code" / f"nets_{tag}.py").read_text() == NET
    x = [[0.1, 0.2, 0.3, 0.4], [1.0, -1.0, 0.5, 2.0]]
    with torch.no_grad():
        want = torch.softmax(model(torch.tensor(x)), dim=1).tolist()

    repo = Path(__file__).resolve().parents[2]
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "PYTHONPATH": str(repo)}

    def load() -> str:
        done = subprocess.run([sys.executable, "-c", LOAD, str(export), json.dumps(x)], cwd=elsewhere, env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout.strip()

    got = load()
    assert got.startswith("probs "), got
    assert np.allclose(json.loads(got[len("probs "):]), want, atol=1e-6)

    marker = tmp_path / "imported"
    (elsewhere / f"evil_{tag}.py").write_text(f"open({str(marker)!r}, 'w').close()\n" + NET)  # found from the cwd
    spec_file = export / "experts" / "e" / "spec.json"
    spec_file.write_text(spec_file.read_text().replace(f"nets_{tag}:Net", f"evil_{tag}:Net"))
    meta = json.loads((export / "system.json").read_text())
    meta["experts"]["e"]["sha256"]["spec.json"] = hashlib.sha256(spec_file.read_bytes()).hexdigest()
    (export / "system.json").write_text(json.dumps(meta))
    env["PYTHONPATH"] += os.pathsep + str(elsewhere)
    got = load()
    assert got.startswith("refused: IntegrityError") and f"'evil_{tag}:Net'" in got, got
    assert not marker.exists()  # refused before it ran


def test_a_custom_class_from_a_package_ships_the_package_without_its_caches(tmp_path: Path, monkeypatch, request):
    from moe_pipeline.serve import shipped_code
    from moe_pipeline.state.version_spec import VersionSpec

    tag = abs(hash(request.node.nodeid))
    package = tmp_path / "project" / f"netpkg_{tag}"
    (package / "__pycache__").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "models.py").write_text(NET)
    (package / "__pycache__" / "models.cpython-311.pyc").write_bytes(b"\0")
    monkeypatch.setattr(sys, "path", list(sys.path))  # `enable` adds the export's code/: undone after the test
    monkeypatch.syspath_prepend(str(tmp_path / "project"))
    saved = VersionSpec(spec={"model": {"kind": "custom", "class": f"netpkg_{tag}.models:Net"}}, in_shape=[4],
                        n_outputs=2, task="classification")
    shipped = shipped_code.ship([saved, saved], tmp_path / "export")
    assert sorted(shipped) == [f"code/netpkg_{tag}/__init__.py", f"code/netpkg_{tag}/models.py"]
    assert shipped_code.enable(tmp_path / "export", shipped) == (tmp_path / "export" / "code").resolve()
    (tmp_path / "export" / "code" / f"netpkg_{tag}" / "models.py").write_text(NET + "\nprint('changed')\n")
    with pytest.raises(IntegrityError, match=f"code/netpkg_{tag}/models.py does not match its sha256"):
        shipped_code.enable(tmp_path / "export", shipped)
