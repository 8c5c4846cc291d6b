"""sailplane's performance harness: ``python -m benchmarks`` (see DESIGN.md).

Scenarios (:mod:`benchmarks.scenarios`) run against a generated mesh
(:mod:`benchmarks.meshgen`); the push fan-out drives real gRPC ADS streams
from a separate process (:mod:`benchmarks.fanout`, :mod:`benchmarks.simclients`);
:mod:`benchmarks.report` prints the table, writes JSON and compares runs.

    python -m benchmarks                       # 1,000 services x 2 ports, 1,000 proxies
    python -m benchmarks --quick               # tiny sizes, seconds
    python -m benchmarks --compare OLD.json    # run, then new/old per metric
    python -m benchmarks --compare OLD.json NEW.json

Results go to benchmarks/results/latest.json (git-ignored) unless --json says
otherwise. Timings on a shared or busy machine vary by tens of percent; compare
runs made on the same, otherwise idle machine.
"""

from benchmarks.meshgen import MeshSpec, generate_texts, load_mesh, proxy_ids
from benchmarks.scenarios import SCENARIOS, Params, run

__all__ = ["SCENARIOS", "MeshSpec", "Params", "generate_texts", "load_mesh", "proxy_ids", "run"]
