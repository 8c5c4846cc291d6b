"""Test harness: real processes (control plane, Envoy, apps) on loopback."""
