"""Registry YAML the unit tests share: a ``backend`` Service on port 5000 and
its WorkloadEntries (addresses that nothing needs to listen on)."""

from __future__ import annotations

BACKEND_SERVICE = """\
apiVersion: v1
kind: Service
metadata: {name: backend}
spec:
  selector: {app: backend}
  ports: [{name: http, port: 5000}]
"""


def backend_entry(version: str, address: str) -> str:
    """A WorkloadEntry ``backend-VERSION`` with labels app and version."""
    return f"""\
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: backend-{version}}}
spec: {{address: {address}, labels: {{app: backend, version: {version}}}}}
"""


# The Service and one workload, version v1.
BACKEND_V1 = f"{BACKEND_SERVICE}---\n{backend_entry('v1', '10.0.0.1')}"
# The Service and two workloads, versions v1 and v2.
BACKEND_V1_V2 = f"{BACKEND_V1}---\n{backend_entry('v2', '10.0.0.2')}"
