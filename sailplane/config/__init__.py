"""Reading configuration: YAML files -> the typed model, with diagnostics.

``loader.py`` reads a directory (``yamldoc.py`` parses YAML keeping line
numbers and bounding alias expansion; ``incremental.py`` re-parses only what
changed); ``envelope.py`` checks apiVersion/kind/metadata; one parser module
per Istio kind (``virtualservice.py``, ``destinationrule.py``, ...) turns a
spec into model dataclasses; ``references.py`` and ``checks.py`` check what
objects say about each other; ``assemble.py`` keeps the last good version of
an object that broke; ``validate.py`` is ``sailplane validate``;
``watch.py`` watches the directory.

May import ``sailplane.model`` and ``sailplane.errors``; never Envoy protos,
``translate``, ``xds`` or ``server``.
"""
