"""MeshConfig.with_fields: a copy that carries the indexes (cached
properties) already built, allowed only for fields no index reads."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

import sailplane
from sailplane.config.loader import load_dir
from sailplane.model.mesh import _INDEXES, MeshConfig

WEATHER = Path(sailplane.__file__).parent / "examples" / "weather"
CHANGES: dict[str, object] = {
    "trust_domain": "elsewhere.example",
    "digest": "another",
    "objects": (),
    "diagnostics": (),
}


def _weather() -> MeshConfig:
    result = load_dir(WEATHER)
    assert result.mesh is not None, result.errors
    return result.mesh


def test_a_load_hands_over_the_indexes_its_checks_built() -> None:
    mesh = _weather()
    assert {"_instances", "services_by_host", "workloads_by_id"} <= set(vars(mesh))


def test_carried_indexes_are_what_the_changed_mesh_would_build_itself() -> None:
    mesh = _weather()
    for name in _INDEXES:
        getattr(mesh, name)  # every index built
    carried = mesh.with_fields(**CHANGES)
    fresh = dataclasses.replace(mesh, **CHANGES)  # type: ignore[arg-type]
    assert carried == fresh and carried.trust_domain == "elsewhere.example"
    assert len(_INDEXES) > 10
    for name in sorted(_INDEXES):
        assert vars(carried)[name] is vars(mesh)[name], name
        assert getattr(fresh, name) == vars(carried)[name], name


def test_a_field_an_index_reads_is_refused() -> None:
    with pytest.raises(ValueError, match="services"):
        _weather().with_fields(services=())
