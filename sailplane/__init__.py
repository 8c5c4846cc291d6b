"""sailplane: Istio-style YAML in, Envoy xDS out.

The pipeline has one direction (each package's docstring says more)::

    YAML dir -> sailplane.config -> sailplane.model.MeshConfig
             -> sailplane.translate -> sailplane.xds (snapshots, ADS)
"""

__version__ = "0.1.0"
