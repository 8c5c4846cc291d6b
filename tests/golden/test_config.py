"""Golden tests of the config stage: YAML -> the typed model.

For each case, ``config/<case>/in/*.yaml`` is loaded with
``sailplane.config.loader.load_dir``; the model (``MeshConfig``, without its
diagnostics) is written to ``config/<case>/model.yaml`` by render.model_tree,
and every diagnostic, info lines included, to ``config/<case>/diagnostics.txt``.

Regenerate with ``pytest tests/golden --update-golden`` and review the diff;
orphaned outputs are removed.
"""

from __future__ import annotations

import pytest

from tests.golden.cases import CONFIG, case_names, check_outputs, load_case
from tests.golden.render import dump_model, model_tree

CASES = case_names(CONFIG)


def render_config_case(name: str) -> dict[str, str]:
    result = load_case(name)
    outputs = {"diagnostics.txt": "".join(f"{d.format()}\n" for d in result.diagnostics)}
    if result.mesh is None:
        outputs["model.yaml"] = "# no model: a file did not parse (see diagnostics.txt)\n"
        return outputs
    tree = model_tree(result.mesh)
    assert tree.pop("diagnostics", []) == [model_tree(d) for d in result.diagnostics]
    outputs["model.yaml"] = dump_model(tree)
    return outputs


@pytest.mark.parametrize("case", CASES)
def test_config_golden(case: str, request: pytest.FixtureRequest) -> None:
    outputs = render_config_case(case)
    check_outputs(CONFIG / case, outputs, bool(request.config.getoption("--update-golden")))
