"""``python -m benchmarks peer [N] [M]``: sailplane side by side with a peer.

The peer is Sovereign 0.32.12 (a Python Envoy control plane: REST polling at
Envoy's 1 s refresh), in the shared harness ``../shared/peer-sovereign`` (next
to the repository; ``--harness DIR`` points elsewhere). Its ``compare.sh N M``
runs Sovereign, then sailplane, on the same work (N clusters with 3 endpoints,
M real Envoys) and prints its own table; this command runs it, then
:mod:`benchmarks.peerprobe` (the same work, timed by a cheap parallel probe
instead of the harness's sequential ``/stats`` polls, each of which walks
every stat of an Envoy), and prints one table of both.

Why an adapter. The harness starts ``$SP_VENV/bin/sailplane serve`` with a
plaintext xDS port only (``--secure-xds-address ''``) and bootstraps each Envoy
with ``sailplane bootstrap`` without ``--plaintext``. It predates bootstrap's
mTLS default: as is, every Envoy dials TLS at a plaintext port and nothing
converges; and a ``--plaintext`` bootstrap would be refused its secrets (a
plaintext stream never carries them), so each Envoy would wait its 15 s
``initial_fetch_timeout`` for the outbound clusters' SDS secrets. So this
command hands the harness an ``SP_VENV`` of two small files that run the real
sailplane as users run it: ``bin/sailplane`` serves the harness's xDS address
over mTLS (plaintext off) and gives each bootstrap ``--ca-dir RUN/ca``, the
run's CA, so the bootstrap certificate is minted by the server's CA;
``bin/python`` is this interpreter. Nothing else changes: the same flags, the
same mesh, the same Envoys, the same process (the adapter ``exec``s, so the
harness's CPU and memory samplers see sailplane itself). One addition: in an
endpoint run, the bootstraps keep the one per-cluster stat the harness reads
(see :func:`write_adapter`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.peerprobe import ProbeParams, ProbeResult, run_probe

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_HARNESS = ROOT.parent / "shared" / "peer-sovereign"

# Rewrites the harness's sailplane command lines (see the module docstring).
ADAPTER = '''#!{python}
"""Written by benchmarks/peer.py: the harness's sailplane, over mTLS ADS."""
import os, sys

args = sys.argv[1:]
if "serve" in args:
    plain, secure = args.index("--xds-address"), args.index("--secure-xds-address")
    args[secure + 1], args[plain + 1] = args[plain + 1], ""
elif "bootstrap" in args:
    output = args[args.index("-o") + 1]
    args += ["--ca-dir", os.path.join(os.path.dirname(output), "ca"), *{stats!r}]
os.execv({python!r}, [{python!r}, "-m", "sailplane", *args])
'''

# (label, key in the harness's summary lines); sov/sp is peer / sailplane.
HARNESS_ROWS = [
    ("initial_s", "initial_s"),
    ("update_s (median)", "update_s"),
    ("update_max_s", "update_max_s"),
    ("idle_cpu_pct", "idle_cpu_pct"),
    ("pss_mb (peak)", "pss_mb"),
]


def parse_peer_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks peer",
        description="sailplane against Sovereign on the same work with the shared harness "
        "(compare.sh), plus sailplane's true convergence (benchmarks/peerprobe.py).",
    )
    parser.add_argument("services", nargs="?", type=int, default=1000, help="N (default 1000)")
    parser.add_argument("proxies", nargs="?", type=int, default=4, help="M Envoys (default 4)")
    parser.add_argument("--delta", action="store_true", help="sailplane's Envoys use delta xDS")
    parser.add_argument(
        "--update",
        choices=["add", "endpoint"],
        default="add",
        help="add one ServiceEntry, or change c0's first endpoint port (default add)",
    )
    parser.add_argument("--reps", type=int, default=5, help="changes timed (default 5)")
    parser.add_argument(
        "--harness",
        type=Path,
        default=DEFAULT_HARNESS,
        help=f"the peer harness's folder, holding compare.sh (default {DEFAULT_HARNESS})",
    )
    parser.add_argument(
        "--probe-only", action="store_true", help="skip the harness: sailplane's probe alone"
    )
    parser.add_argument(
        "--out", type=Path, help="keep the harness's output, peer.json and the probe's run here"
    )
    args = parser.parse_args(argv)
    args.peer = True
    return args


def write_adapter(venv: Path, update: str) -> Path:
    """``venv/bin/{sailplane,python}`` for the harness's ``SP_VENV``. An
    endpoint run waits for each Envoy's ``cluster.outbound|...|c0...
    membership_change``, a stat of an outbound cluster, which a sidecar keeps
    only when asked (sailplane.translate.stats): there the bootstraps ask for
    that one stat, as a user would with the statsInclusionSuffixes annotation."""
    stats = ["--stats-inclusion-suffixes", "membership_change"] if update == "endpoint" else []
    bin_dir = venv / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    sailplane = bin_dir / "sailplane"
    sailplane.write_text(ADAPTER.format(python=sys.executable, stats=stats), encoding="utf-8")
    # A symlink would not do: a venv's interpreter finds its packages from its
    # own path, so it is exec'd by that path.
    python = bin_dir / "python"
    python.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n', encoding="utf-8")
    for path in (sailplane, python):
        path.chmod(0o755)
    return venv


def summary(output: str, system: str) -> dict[str, str]:
    """The ``key=value`` fields of the harness's ``system=NAME`` line."""
    lines = [line for line in output.splitlines() if line.startswith(f"{system}: system=")]
    if not lines:
        return {}
    fields = lines[-1].split(": ", 1)[1].split()
    return dict(field.split("=", 1) for field in fields if "=" in field)


def run_harness(args: argparse.Namespace, venv: Path) -> tuple[int, str]:
    """compare.sh N M with the adapter; its progress goes to stderr as it runs."""
    env = {
        **os.environ,
        "SP_VENV": str(venv),
        "UPDATE": args.update,
        "REPS": str(args.reps),
        "DELTA": "1" if args.delta else "0",
    }
    argv = [str(args.harness / "compare.sh"), str(args.services), str(args.proxies)]
    proc = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        output, _ = proc.communicate()
    finally:
        if proc.poll() is None:  # interrupted: the scripts' traps stop their Envoys
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return proc.returncode, output


def _ratio(peer: str, ours: str) -> str:
    try:
        a, b = float(peer), float(ours)
    except ValueError:
        return "-"
    return f"{a / b:.2f}" if b else "-"


def table(
    args: argparse.Namespace,
    sov: dict[str, str] | None,
    sp: dict[str, str] | None,
    probe: ProbeResult,
) -> list[str]:
    xds = "delta" if args.delta else "sotw"
    lines = [
        f"peer comparison: N={args.services} M={args.proxies} update={args.update} "
        f"reps={args.reps} sailplane xds={xds} (mTLS ADS)",
        f"  {'':<40} {'Sovereign':>10} {'sailplane':>10} {'sov/sp':>7}",
    ]

    def row(label: str, peer: str, ours: str, ratio: str = "-") -> None:
        lines.append(f"  {label:<40} {peer:>10} {ours:>10} {ratio:>7}")

    if sov is not None and sp is not None:
        lines.append("  harness (compare.sh: /stats polled per Envoy in turn, from the write)")
        for label, key in HARNESS_ROWS:
            a, b = sov.get(key, "-"), sp.get(key, "-")
            row(label, a, b, _ratio(a, b))
    lines.append("  probe (benchmarks/peerprobe.py: each Envoy polled every 5 ms, from the mtime)")
    row("initial_s", "-", f"{probe.initial_s:.3f}")
    row("update_s (median)", "-", f"{probe.update_median_ms / 1000:.3f}")
    row("update_max_s", "-", f"{probe.update_max_ms / 1000:.3f}")
    apply = probe.cds_apply_p50_ms
    row("Envoy's CDS update_duration P50, ms", "-", "-" if apply is None else f"{apply:g}")
    lines.append(f"  probe per change, max over Envoys, ms: {probe.update_ms}")
    return lines


def run(args: argparse.Namespace) -> int:
    compare = args.harness / "compare.sh"
    if not args.probe_only and not compare.is_file():
        print(
            f"no peer harness: {compare} does not exist. Put ../shared/peer-sovereign next "
            "to the repository, pass --harness DIR, or --probe-only for sailplane's probe alone.",
            file=sys.stderr,
        )
        return 2
    status = 0
    with tempfile.TemporaryDirectory(prefix="sailplane-peer-") as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        sov = sp = None
        if not args.probe_only:
            rc, output = run_harness(args, write_adapter(Path(tmp) / "venv", args.update))
            (out / "compare.txt").write_text(output, encoding="utf-8")
            print(output, end="", flush=True)
            sov, sp = summary(output, "sovereign"), summary(output, "sailplane")
            if rc != 0 or not sov or not sp:
                print(f"compare.sh exited {rc}; a system gave no summary line", file=sys.stderr)
                status = 1
        params = ProbeParams(args.services, args.proxies, args.update, args.reps, args.delta)
        work = out / "probe"
        work.mkdir(exist_ok=True)
        try:
            probe = run_probe(params, work)
        except (RuntimeError, TimeoutError, subprocess.CalledProcessError) as error:
            print(f"probe failed: {error}", file=sys.stderr)
            return 1
        doc = {"sovereign": sov, "sailplane": sp, "probe": probe.as_dict()}
        (out / "peer.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        print("\n".join(table(args, sov, sp, probe)))
        if args.out:
            print(f"wrote {args.out}")
    return status
