"""Container images for the local node, built without Docker or a registry: layer tarballs -> umoci -> skopeo.

Called by ``agentid.devcluster.node`` (the pause image every Pod sandbox runs, a busybox image for test workloads)
and by ``hack/build-image.py`` / the node test fixtures (the agentid image). Each archive is a ``docker-archive``
tarball named ``localhost/<name>:<tag>`` that ``ctr images import`` takes, cached by a hash of its inputs.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agentid.devcluster import assets

BUSYBOX = Path("/bin/busybox")
PAUSE_NAME = "localhost/agentid-pause:1"
BUSYBOX_NAME = "localhost/agentid-busybox:1"
DEBIAN_SUITE = "bookworm"  # python3.11, the interpreter the Dockerfile's base image has
DEBIAN_MIRROR = "http://deb.debian.org/debian"
# The runtime of the agentid image: the Dockerfile says the same (a unit test compares the two).
AGENTID_USER = "65532:65532"
AGENTID_ENV = {
    "PATH": "/opt/agentid/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONUNBUFFERED": "1",
}
AGENTID_ENTRYPOINT = ("agentid",)
AGENTID_CMD = ("run", "--all-namespaces")
AGENTID_WORKDIR = "/tmp"  # noqa: S108 - the working directory inside the image (an emptyDir in the chart)
USER_ENTRY = "nonroot:x:65532:65532:nonroot:/nonexistent:/usr/sbin/nologin"  # /etc/passwd line of the image's user
GROUP_ENTRY = "nonroot:x:65532:"


class ImageBuildError(RuntimeError):
    """A build step failed; the message has its output."""


@dataclass(frozen=True)
class ImageArchive:
    """A docker-archive tarball holding one image, and the name the node knows it by."""

    path: Path
    name: str  # localhost/<repository>:<tag>

    @property
    def repository(self) -> str:
        return self.name.rsplit(":", 1)[0]

    @property
    def tag(self) -> str:
        return self.name.rsplit(":", 1)[1]


@dataclass(frozen=True)
class ImageConfig:
    entrypoint: Sequence[str]
    cmd: Sequence[str] = ()
    user: str = ""
    env: Mapping[str, str] = field(default_factory=dict)
    workdir: str = ""


def cache_dir() -> Path:
    folder = assets.cache_root() / "images"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _run(argv: Sequence[str], **kwargs: object) -> None:
    result = subprocess.run(list(argv), capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-30:])
        raise ImageBuildError(f"{argv[0]} {argv[1] if len(argv) > 1 else ''} failed:\n{tail}")


def _progress(message: str) -> None:
    print(f"[image {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def assemble(layers: Sequence[Path], name: str, config: ImageConfig, destination: Path) -> ImageArchive:
    """Stack uncompressed layer tarballs into an image with ``config`` and write it as a docker-archive."""
    repository, tag = name.rsplit(":", 1)
    with tempfile.TemporaryDirectory(prefix="agentid-image-") as scratch:
        layout = f"{scratch}/oci"
        image = f"{layout}:{tag}"
        _run(["umoci", "init", "--layout", layout])
        _run(["umoci", "new", "--image", image])
        for layer in layers:
            _run(["umoci", "raw", "add-layer", "--image", image, str(layer)])
        argv = ["umoci", "config", "--image", image, "--clear=config.entrypoint", "--clear=config.cmd"]
        argv += [f"--config.entrypoint={part}" for part in config.entrypoint]
        argv += [f"--config.cmd={part}" for part in config.cmd]
        argv += [f"--config.env={key}={value}" for key, value in config.env.items()]
        if config.user:
            argv.append(f"--config.user={config.user}")
        if config.workdir:
            argv.append(f"--config.workingdir={config.workdir}")
        _run(argv)
        partial = destination.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        _run(["skopeo", "--insecure-policy", "copy", "--quiet", f"oci:{image}", f"docker-archive:{partial}:{name}"])
        partial.replace(destination)
    return ImageArchive(destination, f"{repository}:{tag}")


def _digest(*parts: bytes | Path | str) -> str:
    sha = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            sha.update(part.read_bytes())
        else:
            sha.update(part.encode() if isinstance(part, str) else part)
        sha.update(b"\0")
    return sha.hexdigest()[:16]


def _cached(stem: str, key: str, name: str) -> tuple[ImageArchive, bool]:
    path = cache_dir() / f"{stem}-{key}.tar"
    return ImageArchive(path, name), path.is_file()


def _tar_layer(path: Path, entries: Iterable[tuple[str, bytes | None, int, str | None]]) -> Path:
    """A layer from (name, content, mode, symlink target) entries, owned by root, at a fixed time."""
    with tarfile.open(path, "w") as tar:
        for name, content, mode, target in entries:
            info = tarfile.TarInfo(name)
            info.mode, info.mtime = mode, 0
            if target is not None:
                info.type, info.linkname = tarfile.SYMTYPE, target
                tar.addfile(info)
            elif content is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return path


# -- the images --------------------------------------------------------------------------------------------------


def pause_image() -> ImageArchive:
    """The Pod sandbox: hack/pause/main.go built by ``hack/build-control-plane.sh --with-node``."""
    binary = assets.find_node_binary("pause")
    archive, present = _cached("pause", _digest(binary), PAUSE_NAME)
    if present:
        return archive
    with tempfile.TemporaryDirectory() as scratch:
        layer = _tar_layer(Path(scratch, "layer.tar"), [("pause", binary.read_bytes(), 0o755, None)])
        return assemble([layer], archive.name, ImageConfig(entrypoint=["/pause"]), archive.path)


def busybox_image() -> ImageArchive:
    """A shell and the usual tools (Debian's busybox-static), for test workloads."""
    archive, present = _cached("busybox", _digest(BUSYBOX), BUSYBOX_NAME)
    if present:
        return archive
    applets = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True, check=True).stdout.split()
    entries: list[tuple[str, bytes | None, int, str | None]] = [
        ("bin", None, 0o755, None),
        ("tmp", None, 0o1777, None),
        ("etc", None, 0o755, None),
        ("bin/busybox", BUSYBOX.read_bytes(), 0o755, None),
    ]
    entries += [(f"bin/{applet}", None, 0o777, "busybox") for applet in applets if applet != "busybox"]
    with tempfile.TemporaryDirectory() as scratch:
        layer = _tar_layer(Path(scratch, "layer.tar"), entries)
        config = ImageConfig(entrypoint=["/bin/sh"], env={"PATH": "/bin"})
        return assemble([layer], archive.name, config, archive.path)


def _source_files(root: Path) -> list[Path]:
    """What goes into the agentid image: the package sources, its metadata and the image recipe."""
    files = [root / "pyproject.toml", root / "README.md", *sorted((root / "hack" / "image").glob("*"))]
    files += sorted(p for p in (root / "operator").rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    return files


def agentid_image(root: Path, tag: str = "dev") -> ImageArchive:
    """The operator image: a Debian rootfs (mmdebstrap) with python3 and a venv at /opt/agentid that
    hack/image/install.sh fills from the wheels hack/image/wheelhouse.sh gathers (the Dockerfile runs both too)."""
    files = _source_files(root)
    key = _digest(DEBIAN_SUITE, *(str(path.relative_to(root)) for path in files), *files)
    archive, present = _cached("agentid", key, f"localhost/agentid:{tag}")
    if present:
        _progress(f"{archive.name}: cached ({archive.path})")
        return archive
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="agentid-image-") as scratch:
        wheels = Path(scratch, "wheels")
        _progress("gathering wheels (hack/image/wheelhouse.sh)")
        _run(
            ["sh", str(root / "hack/image/wheelhouse.sh"), str(wheels)],
            cwd=root,
            env={**os.environ, "PYTHON": sys.executable},
        )
        rootfs = Path(scratch, "rootfs.tar")
        _progress(f"Debian {DEBIAN_SUITE} rootfs with python3 (mmdebstrap)")
        _run(
            [
                "mmdebstrap", "--variant=essential", "--include=python3,python3-venv,ca-certificates",
                "--dpkgopt=path-exclude=/usr/share/doc/*", "--dpkgopt=path-exclude=/usr/share/man/*",
                "--dpkgopt=path-exclude=/usr/share/locale/*",
                f"--customize-hook=copy-in {wheels} {root / 'hack/image/install.sh'} /tmp",
                '--customize-hook=chroot "$1" sh /tmp/install.sh /tmp/wheels',
                f"--customize-hook=echo '{USER_ENTRY}' >> \"$1/etc/passwd\"; echo '{GROUP_ENTRY}' >> \"$1/etc/group\"",
                '--customize-hook=rm -rf "$1/tmp/wheels" "$1/tmp/install.sh" "$1/var/cache/apt" "$1/var/lib/apt/lists"',
                DEBIAN_SUITE, str(rootfs), DEBIAN_MIRROR,
            ]
        )  # fmt: skip
        config = ImageConfig(
            entrypoint=AGENTID_ENTRYPOINT, cmd=AGENTID_CMD, user=AGENTID_USER, env=AGENTID_ENV, workdir=AGENTID_WORKDIR
        )
        _progress("image (umoci, skopeo)")
        result = assemble([rootfs], archive.name, config, archive.path)
    for stale in cache_dir().glob("agentid-*.tar"):
        if stale != archive.path:
            stale.unlink(missing_ok=True)
    _progress(f"{archive.name} built in {time.monotonic() - started:.0f}s ({archive.path})")
    return result
