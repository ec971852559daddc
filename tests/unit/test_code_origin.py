"""A stored version's custom class is imported only from the project's own code: a spec.json
edited to name some other module is refused before that module runs."""
from __future__ import annotations

import sys
from pathlib import Path

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
