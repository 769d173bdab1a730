"""Container images for the local node, built without Docker or a registry: layer tarballs -> umoci -> skopeo.

Called by ``agentid.devcluster.node`` (the pause image every Pod sandbox runs, a busybox image for test workloads)
and by ``hack/build-image.py`` / the node test fixtures (the agentid image). Each archive is a ``docker-archive``
tarball named ``localhost/<name>:<tag>`` that ``ctr images import`` takes, cached by a hash of its inputs.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
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
DEBIAN_PACKAGES = ("python3", "python3-venv", "ca-certificates")
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
    """What goes into the agentid image: the package sources, its metadata and the image recipe. Not the build's
    by-products (``__pycache__``, the ``*.egg-info`` the wheel build rewrites): they would change the key after
    each build and build the same image twice."""
    files = [root / "pyproject.toml", root / "README.md", *sorted((root / "hack" / "image").glob("*"))]
    files += sorted(
        p
        for p in (root / "operator").rglob("*")
        if p.is_file() and not any(part == "__pycache__" or part.endswith(".egg-info") for part in p.parts)
    )
    return files


def debian_base() -> Path:
    """The base layer: Debian with python3 and its venv module, the image's user, no apt lists (mmdebstrap),
    cached by what it is made of, so a change to agentid rebuilds only the venv layer."""
    key = _digest(DEBIAN_SUITE, *DEBIAN_PACKAGES, USER_ENTRY, GROUP_ENTRY)
    path = cache_dir() / f"base-{DEBIAN_SUITE}-{key}.tar"
    if path.is_file():
        return path
    _progress(f"Debian {DEBIAN_SUITE} base with python3 (mmdebstrap, once)")
    partial = path.with_suffix(".partial")
    _run(
        [
            "mmdebstrap", "--variant=essential", f"--include={','.join(DEBIAN_PACKAGES)}",
            "--dpkgopt=path-exclude=/usr/share/doc/*", "--dpkgopt=path-exclude=/usr/share/man/*",
            "--dpkgopt=path-exclude=/usr/share/locale/*",
            f"--customize-hook=echo '{USER_ENTRY}' >> \"$1/etc/passwd\"; echo '{GROUP_ENTRY}' >> \"$1/etc/group\"",
            '--customize-hook=rm -rf "$1/var/cache/apt" "$1/var/lib/apt/lists"',
            "--format=tar", DEBIAN_SUITE, str(partial), DEBIAN_MIRROR,
        ]
    )  # fmt: skip
    partial.replace(path)
    return path


def _venv_layer(root: Path, base: Path, scratch: Path) -> Path:
    """/opt/agentid as a layer: hack/image/install.sh run in a chroot of the base on the wheels of
    hack/image/wheelhouse.sh (the Dockerfile runs the same two scripts)."""
    rootfs = scratch / "rootfs"
    rootfs.mkdir()
    _run(["tar", "-xf", str(base), "-C", str(rootfs)])
    wheels = rootfs / "tmp" / "wheels"
    _progress("gathering wheels (hack/image/wheelhouse.sh)")
    _run(
        ["sh", str(root / "hack/image/wheelhouse.sh"), str(wheels)],
        cwd=root,
        env={**os.environ, "PYTHON": sys.executable},
    )
    shutil.copy(root / "hack/image/install.sh", rootfs / "tmp" / "install.sh")
    _progress("venv /opt/agentid (hack/image/install.sh in a chroot)")
    inside = "/tmp"  # noqa: S108 - the chroot's own /tmp, not the host's
    command = ["sh", f"{inside}/install.sh", f"{inside}/wheels"]
    _run(["env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "chroot", str(rootfs), *command])
    layer = scratch / "venv.tar"
    _run(["tar", "--numeric-owner", "-cf", str(layer), "-C", str(rootfs), "opt/agentid"])
    return layer


def agentid_image(root: Path, tag: str = "dev") -> ImageArchive:
    """The operator image: the Debian base layer and a layer with the venv at /opt/agentid."""
    files = _source_files(root)
    key = _digest(DEBIAN_SUITE, *(str(path.relative_to(root)) for path in files), *files)
    archive, present = _cached("agentid", key, f"localhost/agentid:{tag}")
    if present:
        _progress(f"{archive.name}: cached ({archive.path})")
        return archive
    started = time.monotonic()
    base = debian_base()
    with tempfile.TemporaryDirectory(prefix="agentid-image-") as scratch:
        layer = _venv_layer(root, base, Path(scratch))
        config = ImageConfig(
            entrypoint=AGENTID_ENTRYPOINT, cmd=AGENTID_CMD, user=AGENTID_USER, env=AGENTID_ENV, workdir=AGENTID_WORKDIR
        )
        _progress("image (umoci, skopeo)")
        result = assemble([base, layer], archive.name, config, archive.path)
    for stale in cache_dir().glob("agentid-*.tar"):
        if stale != archive.path:
            stale.unlink(missing_ok=True)
    _progress(f"{archive.name} built in {time.monotonic() - started:.0f}s ({archive.path})")
    return result
