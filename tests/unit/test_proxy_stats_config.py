"""The bootstrap's stats_config (sailplane.translate.stats) and Istio's
``sidecar.istio.io/statsInclusion*`` annotations that extend it."""

from __future__ import annotations

import json
import random
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from envoy.config.metrics.v3.stats_pb2 import StatsMatcher

from sailplane.cli import main
from sailplane.config.loader import load_dir
from sailplane.model.registry import NO_STATS_INCLUSION, StatsInclusion, Workload
from sailplane.server.envoycheck import find_envoy
from sailplane.translate.bootstrap import build_bootstrap
from sailplane.translate.stats import OUTBOUND_CLUSTER_STATS, not_prefix_regex

ENTRY = """\
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: client
  namespace: default
  annotations:
{annotations}
spec:
  address: 10.1.2.3
"""


def load(tmp_path: Path, annotations: dict[str, str]) -> tuple[list[str], Workload | None]:
    lines = "\n".join(f"    {key}: {json.dumps(value)}" for key, value in annotations.items())
    (tmp_path / "client.yaml").write_text(ENTRY.format(annotations=lines or "    {}"))
    result = load_dir(tmp_path)
    assert result.mesh is not None
    diagnostics = [d.format() for d in result.diagnostics]
    return diagnostics, result.mesh.workloads_by_id.get("client.default")


def matcher(
    tmp_path: Path, annotations: dict[str, str], extra: StatsInclusion = NO_STATS_INCLUSION
) -> StatsMatcher:
    _, workload = load(tmp_path, annotations)
    assert workload is not None
    bootstrap = build_bootstrap(workload, ("127.0.0.1", 15010), stats=extra)
    assert bootstrap.deferred_stat_options.enable_deferred_creation_stats
    return bootstrap.stats_config.stats_matcher


@pytest.mark.parametrize(
    "name",
    [
        "cluster.outbound|80||c0.bench.local.upstream_rq_total",
        "cluster.outbound|",
    ],
)
def test_the_prefix_regex_refuses_the_prefix(name: str) -> None:
    assert not re.fullmatch(not_prefix_regex(OUTBOUND_CLUSTER_STATS), name)


def test_the_prefix_regex_takes_everything_else() -> None:
    pattern = re.compile(not_prefix_regex(OUTBOUND_CLUSTER_STATS))
    names = [
        "cluster.inbound|5000||.upstream_rq_total",
        "cluster.xds-grpc.upstream_cx_total",
        "cluster_manager.active_clusters",
        "cluster.outbound",  # shorter than the prefix
        "cluster.outbounds|x",
        "listener.0.0.0.0_15001.downstream_cx_total",
        "",
    ]
    assert all(pattern.fullmatch(name) for name in names)
    # Against the plain definition, on random names near the prefix.
    rng = random.Random(7)
    alphabet = "clusteroabind.|_x"
    for _ in range(3000):
        cut = rng.randrange(len(OUTBOUND_CLUSTER_STATS) + 1)
        name = OUTBOUND_CLUSTER_STATS[:cut] + "".join(
            rng.choice(alphabet) for _ in range(rng.randrange(6))
        )
        expected = not name.startswith(OUTBOUND_CLUSTER_STATS)
        assert bool(pattern.fullmatch(name)) is expected, name


def test_default_excludes_only_the_outbound_clusters(tmp_path: Path) -> None:
    found = matcher(tmp_path, {})
    assert found.WhichOneof("stats_matcher") == "exclusion_list"
    assert [p.prefix for p in found.exclusion_list.patterns] == [OUTBOUND_CLUSTER_STATS]


def test_all_outbound_clusters_asked_for_means_every_stat(tmp_path: Path) -> None:
    asked = {"sidecar.istio.io/statsInclusionPrefixes": "http.{pod_ip}_, cluster.outbound"}
    assert matcher(tmp_path, asked).WhichOneof("stats_matcher") is None


def test_annotations_add_to_everything_else(tmp_path: Path) -> None:
    annotations = {
        "sidecar.istio.io/statsInclusionPrefixes": "cluster.outbound|80|, http.{pod_ip}_",
        "sidecar.istio.io/statsInclusionSuffixes": "upstream_rq_total",
        "sidecar.istio.io/statsInclusionRegexps": r"cluster\.outbound\|80\|.*",
    }
    flags = StatsInclusion(suffixes=("membership_change", "upstream_rq_total"))
    found = matcher(tmp_path, annotations, flags)
    assert found.WhichOneof("stats_matcher") == "inclusion_list"
    patterns = found.inclusion_list.patterns
    assert patterns[0].safe_regex.regex == not_prefix_regex(OUTBOUND_CLUSTER_STATS)
    assert [p.prefix for p in patterns if p.prefix] == ["cluster.outbound|80|", "http.10.1.2.3_"]
    assert [p.suffix for p in patterns if p.suffix] == ["upstream_rq_total", "membership_change"]
    assert patterns[-1].safe_regex.regex == r"cluster\.outbound\|80\|.*"


@pytest.mark.parametrize(
    ("annotations", "message"),
    [
        ({"sidecar.istio.io/statsInclusionRegexps": "(?!x)y"}, "is not RE2 syntax"),
        ({"sidecar.istio.io/statsInclusionRegexps": "a(b"}, "invalid regex"),
        ({"sidecar.istio.io/statsInclusionPrefixes": ",".join("p" * 65)}, "at most 64"),
    ],
    ids=["lookahead", "unbalanced", "too-many"],
)
def test_bad_annotations_name_file_line_and_drop_the_entry(
    tmp_path: Path, annotations: dict[str, str], message: str
) -> None:
    diagnostics, workload = load(tmp_path, annotations)
    assert workload is None  # the WorkloadEntry is not used
    assert len(diagnostics) == 1, diagnostics
    assert diagnostics[0].startswith("client.yaml:7:")
    assert "WorkloadEntry default/client" in diagnostics[0]
    assert f"metadata.annotations.{next(iter(annotations))}" in diagnostics[0]
    assert message in diagnostics[0]


def test_misspelt_annotation_is_reported(tmp_path: Path) -> None:
    diagnostics, _ = load(tmp_path, {"sidecar.istio.io/statsInclusionPrefix": "cluster.outbound"})
    assert len(diagnostics) == 1, diagnostics
    assert "did you mean 'sidecar.istio.io/statsInclusionPrefixes'" in diagnostics[0]


def test_cli_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    load(tmp_path, {})
    out = tmp_path / "out" / "client.yaml"
    out.parent.mkdir()
    base = ["bootstrap", "client", "--config-dir", str(tmp_path), "--xds-address", "h:1"]
    flags = ["--stats-inclusion-suffixes", "membership_change,", "--plaintext"]
    assert main([*base, *flags, "-o", str(out)]) == 0
    stats = yaml.safe_load(out.read_text().split("\n", 2)[2])["stats_config"]
    assert stats["stats_matcher"]["inclusion_list"]["patterns"][1] == {
        "suffix": "membership_change"
    }
    assert main([*base, "--stats-inclusion-regexps", "(?=a)", "--plaintext"]) == 2
    assert "--stats-inclusion-regexps" in capsys.readouterr().err
    argv = ["bootstrap", "--all", "--config-dir", str(tmp_path), "--xds-address", "h:1"]
    code = main([*argv, "--stats-inclusion-prefixes", "x", "-o", str(tmp_path / "all")])
    assert code == 2
    assert "not with --all" in capsys.readouterr().err


def test_envoy_accepts_both_forms(tmp_path: Path) -> None:
    envoy = find_envoy()
    for asked in ({}, {"sidecar.istio.io/statsInclusionPrefixes": "cluster.outbound"}):
        load(tmp_path, asked)
        out = tmp_path / "bootstrap.yaml"
        argv = ["bootstrap", "client", "--config-dir", str(tmp_path), "--plaintext"]
        assert main([*argv, "--xds-address", "127.0.0.1:1", "-o", str(out)]) == 0
        done = subprocess.run(
            [envoy, "--mode", "validate", "-c", str(out), "-l", "critical"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stdout + done.stderr
