"""Golden tests, one set per stage. Regenerate every stage with

    pytest tests/golden --update-golden

and review the diff (orphaned outputs are removed).

Layout::

    config/<case>/in/*.yaml          the inputs; every stage reads these
    config/<case>/model.yaml         YAML -> sailplane.model (test_config.py)
    config/<case>/diagnostics.txt    the loader's diagnostics, with positions
    translate/_shared.yaml           blocks written once: {$ref: NAME} elsewhere
                                     ({$ref: '#/pointer'}: a repeat within one file)
    translate/<case>/case.yaml       the proxies (node id -> node metadata)
    translate/<case>/mesh-wide.{clusters,endpoints}.yaml
    translate/<case>/<node-id>.{clusters,listeners,routes,secrets}.yaml
                                     model -> Envoy resources (test_translate.py)
    controller/<case>/case.yaml      the proxies
    controller/<case>/<node-id>.yaml config -> Controller snapshot (test_controller.py)

Each case covers one feature area (virtual-service-http, destination-rule,
gateway-tcp, registry, sidecar-scope, security, telemetry,
invalid-references); weather-canary, the reference scenario, goes through the
Controller. A translate or controller case reads the config case of its
name. Builders are also covered by table tests: tests/unit/test_*_table.py.
"""
