"""The images the compose tests run on, built on this machine (no registry is reachable).

``squall-test/bookworm`` is a ``debootstrap --variant=minbase bookworm`` root file system
imported into Docker; ``squall-test/python:3.11``, ``squall-test/postgres:15`` and
``squall-test/redis:7`` are built on it from ``tests/compose/images/*/Dockerfile`` and stand
in for ``python:3.11-slim-bookworm``, ``postgres:15`` and ``redis:7``.

Each base image carries a label holding a hash of its inputs (its build files, its parent's
hash, the local CA certificates given to pip); :func:`ensure_base_images` builds only those
whose tag is missing or whose label differs, under a file lock so that two test sessions do
not build at once. The Squall image itself (``deploy/Dockerfile``) is built by every session
on top of them, from the checkout's latest commit (``SQUALL_TEST_BUILD_FROM=worktree``: from
the files on disk); Docker's layer cache makes that quick when nothing changed.

``python -m tests.compose.images`` builds the base images ahead of a test run.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
IMAGES_DIR = Path(__file__).resolve().parent / "images"
HASH_LABEL = "org.squall.test.inputs"
LOCK_FILE = Path(tempfile.gettempdir()) / "squall-test-images.lock"
# The build host's own CA certificates (Debian's place for them): copied into the Python
# image so that pip trusts an intercepting proxy the host trusts.
LOCAL_CA_DIR = Path("/usr/local/share/ca-certificates")

DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
BOOKWORM = "squall-test/bookworm:latest"
PYTHON = "squall-test/python:3.11"
POSTGRES = "squall-test/postgres:15"
REDIS = "squall-test/redis:7"
SQUALL = "squall-test/squall:latest"

BUILD_TIMEOUT = 1200.0


class ImageBuildError(RuntimeError):
    """A base image or the Squall image could not be built; the message says which step."""


def run(argv: Sequence[str], *, timeout: float = BUILD_TIMEOUT, check: bool = True
        ) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing its output; a failure raises with the output's tail."""
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                          check=False)
    if check and proc.returncode != 0:
        raise ImageBuildError(f"{' '.join(argv)} exited {proc.returncode}:\n"
                              f"{_tail(proc.stdout + proc.stderr)}")
    return proc


@dataclass(frozen=True)
class BaseImage:
    """One locally built base image: its tag, its build folder and its parent."""

    tag: str
    folder: str | None  # under tests/compose/images/; None: the debootstrapped root
    parent: BaseImage | None = None
    with_local_ca: bool = False

    def input_files(self) -> list[tuple[str, bytes]]:
        """(name, content) of everything the build reads, in a stable order."""
        files: list[tuple[str, bytes]] = []
        if self.folder is not None:
            root = IMAGES_DIR / self.folder
            files += [(str(p.relative_to(root)), p.read_bytes())
                      for p in sorted(root.rglob("*")) if p.is_file()]
        if self.with_local_ca:
            files += [(f"ca/{p.name}", p.read_bytes()) for p in local_ca_files()]
        return files

    def inputs_hash(self) -> str:
        digest = hashlib.sha256(self.tag.encode())
        if self.folder is None:
            digest.update(f"debootstrap --variant=minbase {DEBIAN_SUITE} {DEBIAN_MIRROR}"
                          .encode())
        if self.parent is not None:
            digest.update(self.parent.inputs_hash().encode())
        for name, content in self.input_files():
            digest.update(f"\0{name}\0{len(content)}\0".encode())
            digest.update(content)
        return digest.hexdigest()[:32]


BOOKWORM_IMAGE = BaseImage(BOOKWORM, None)
BASE_IMAGES = (
    BOOKWORM_IMAGE,
    BaseImage(PYTHON, "python", BOOKWORM_IMAGE, with_local_ca=True),
    BaseImage(POSTGRES, "postgres", BOOKWORM_IMAGE),
    BaseImage(REDIS, "redis", BOOKWORM_IMAGE),
)


def local_ca_files() -> list[Path]:
    if not LOCAL_CA_DIR.is_dir():
        return []
    return sorted(p for p in LOCAL_CA_DIR.rglob("*.crt") if p.is_file())


def image_label(tag: str) -> str | None:
    """The image's input-hash label, or None when there is no such image."""
    proc = run(["docker", "image", "inspect", "--format",
                f'{{{{ index .Config.Labels "{HASH_LABEL}" }}}}', tag], check=False,
               timeout=60)
    if proc.returncode != 0:
        return None
    return proc.stdout.strip()


@contextmanager
def build_lock() -> Iterator[None]:
    with LOCK_FILE.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_base_images() -> list[str]:
    """Build the base images that are missing or out of date; returns the tags built."""
    built = []
    with build_lock():
        for image in BASE_IMAGES:
            wanted = image.inputs_hash()
            if image_label(image.tag) == wanted:
                continue
            started = time.monotonic()
            log.info("Image %s: building (inputs %s)", image.tag, wanted)
            if image.folder is None:
                _build_root(image, wanted)
            else:
                _build_from_folder(image, wanted)
            log.info("Image %s: built in %.0f s", image.tag, time.monotonic() - started)
            built.append(image.tag)
    return built


def _build_root(image: BaseImage, wanted: str) -> None:
    if shutil.which("debootstrap") is None:
        raise ImageBuildError("debootstrap is not installed: apt-get install -y debootstrap "
                              "(or run .ci/docker.sh)")
    with tempfile.TemporaryDirectory(prefix="squall-debootstrap-", dir="/var/tmp") as tmp:
        root = Path(tmp) / "root"
        run(["debootstrap", "--variant=minbase", DEBIAN_SUITE, str(root), DEBIAN_MIRROR])
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        try:
            proc = subprocess.run(
                ["docker", "import", "--change", f"LABEL {HASH_LABEL}={wanted}",
                 "--change", 'CMD ["/bin/bash"]', "-", image.tag],
                stdin=tar.stdout, capture_output=True, text=True, timeout=600, check=False)
        finally:
            if tar.stdout is not None:
                tar.stdout.close()
            tar_rc = tar.wait(timeout=600)
        if proc.returncode != 0 or tar_rc != 0:
            raise ImageBuildError(f"docker import of the {DEBIAN_SUITE} root failed (tar "
                                  f"exit {tar_rc}, docker exit {proc.returncode}): "
                                  f"{proc.stderr.strip()}")


def _build_from_folder(image: BaseImage, wanted: str) -> None:
    assert image.folder is not None and image.parent is not None
    with tempfile.TemporaryDirectory(prefix="squall-image-") as tmp:
        context = Path(tmp)
        shutil.copytree(IMAGES_DIR / image.folder, context, dirs_exist_ok=True)
        if image.with_local_ca:
            ca = context / "ca"
            ca.mkdir()
            for path in local_ca_files():
                shutil.copyfile(path, ca / path.name)
            (ca / "README").write_text("the build host's local CA certificates\n")
        run(["docker", "build", "--pull=false", "--label", f"{HASH_LABEL}={wanted}",
             "--build-arg", f"BOOKWORM={image.parent.tag}", "-t", image.tag, str(context)])


#: What the Squall image is built from: ``head`` (default), the files of the checkout's
#: latest commit (``git archive HEAD``), so that work in progress beside it cannot break the
#: build; ``worktree``, the checkout as it is on disk (with .dockerignore).
BUILD_FROM_ENV = "SQUALL_TEST_BUILD_FROM"
CONTEXT_PATHS = ("pyproject.toml", "constraints.txt", "README.md", "squall", "deploy")


def build_squall_image(tag: str = SQUALL) -> float:
    """Build deploy/Dockerfile on the test Python image; returns the seconds it took."""
    started = time.monotonic()
    base = ["docker", "build", "--pull=false", "--build-arg", f"BASE_IMAGE={PYTHON}",
            "-t", tag]
    source = os.environ.get(BUILD_FROM_ENV, "head")
    if source == "worktree" or not (REPO / ".git").exists():
        run([*base, "-f", str(REPO / "deploy" / "Dockerfile"), str(REPO)])
    elif source == "head":
        with tempfile.TemporaryDirectory(prefix="squall-context-") as tmp:
            archive = Path(tmp) / "context.tar"
            run(["git", "-C", str(REPO), "archive", "--format=tar", f"--output={archive}",
                 "HEAD", "--", *CONTEXT_PATHS], timeout=120)
            with archive.open("rb") as stdin:
                proc = subprocess.run([*base, "-f", "deploy/Dockerfile", "-"], stdin=stdin,
                                      capture_output=True, text=True, timeout=BUILD_TIMEOUT,
                                      check=False)
            if proc.returncode != 0:
                raise ImageBuildError(f"docker build of HEAD exited {proc.returncode}:\n"
                                      f"{_tail(proc.stdout + proc.stderr)}")
    else:
        raise ImageBuildError(f"{BUILD_FROM_ENV}={source!r}: expected head or worktree")
    return time.monotonic() - started


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    built = ensure_base_images()
    print(f"built: {', '.join(built)}" if built else "the base images are up to date")
    print(f"squall image {SQUALL} built in {build_squall_image():.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
