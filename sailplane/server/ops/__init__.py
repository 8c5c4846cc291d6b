"""What an operator looks at: ``/metrics`` (``metrics.py``), the monitor's
small HTTP server (``monitor.py``) and the debug views it serves
(``views.py``: sync state, one proxy's resources, configz, dry-run diffs).

May import ``sailplane.server`` modules below the plane; ``plane.py`` only for types.
"""
