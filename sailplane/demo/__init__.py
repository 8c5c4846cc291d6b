"""The weather mesh, runnable: ``sailplane demo`` and ``sailplane bootstrap --all``.

* :mod:`sailplane.demo.bootstraps`: one Envoy bootstrap per WorkloadEntry
  (what docker compose and the demo run);
* :mod:`sailplane.demo.layout`: one loopback address per workload, and a
  copy of the example rewritten to use them;
* :mod:`sailplane.demo.processes`, :mod:`sailplane.demo.traffic`,
  :mod:`sailplane.demo.view`: the child processes, the clients, the view;
* :mod:`sailplane.demo.screen`: what is shown, when, from the plane's state;
* :mod:`sailplane.demo.run`: the whole, ``run_demo(DemoOptions(...))``.

May import every package but ``cli``. Nothing is imported here: ``sailplane
bootstrap --all`` needs only ``bootstraps``, and should not pay for the
control plane and rich.
"""
