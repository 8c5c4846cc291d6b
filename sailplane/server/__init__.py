"""The running control plane: the one place that wires the stages together.

``plane.py`` builds a :class:`ControlPlane` from its parts (the config
loader and watcher, the controller, the xDS server, the CA, telemetry) and
runs its lifecycle; ``reload.py`` puts new configurations in force;
``controller.py`` keeps every connected proxy's snapshot up to date from
the shared work in ``generation.py`` and ``routetables.py``; ``admission.py``
decides which streams may have which resources. ``ops/`` holds what an
operator looks at: metrics, the monitor's HTTP server and its views.

May import every other package of sailplane except ``cli`` and ``demo``.
"""

from sailplane.server.plane import ControlPlane, ServeOptions, embedded_example, serve_forever

__all__ = ["ControlPlane", "ServeOptions", "embedded_example", "serve_forever"]
