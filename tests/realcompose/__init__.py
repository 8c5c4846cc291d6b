"""The real compose test: docker-compose.yml on a real Docker engine.

Run as root by `.ci/run` after the suite (`python -m tests.realcompose`);
not collected by pytest. See __main__.py.
"""
