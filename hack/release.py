"""Build the release artifacts into one folder (``make release``): what .github/workflows/release.yaml publishes.

``build``: checks that every version in the repository is the one of pyproject.toml, then writes
  - the wheel and sdist of the ``agentid-operator`` distribution (import package ``agentid``), checked by twine;
  - ``image-requirements.txt``: the exact Python packages of the image (the wheel installed the way the Dockerfile
    installs it, in a fresh virtualenv, with pip/setuptools/wheel removed as in the image); the Dockerfile installs
    with these pins when the file is in its build context, so the image holds exactly what the SBOM lists;
  - ``agentid-operator-<version>.cdx.json``: a CycloneDX SBOM of that environment (cyclonedx-bom);
  - ``agentid-operator-<version>.tgz``: the Helm chart with its CRDs (``helm push`` it to an OCI registry).
``checksums``: writes ``SHA256SUMS`` (``sha256sum -c`` format) over every other file in the folder — run last,
after ``make image`` has added the image archive, if it did.

The build tools (build, twine, cyclonedx-bom) live in their own virtualenv (``--tools``), like checkov: their
pins never constrain the project's.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "charts" / "agentid-operator"
DISTRIBUTION = "agentid-operator"
IMAGE_REMOVES = ("pip", "setuptools", "wheel")  # the Dockerfile uninstalls them from the image's virtualenv
CHECKSUMS = "SHA256SUMS"


def versions() -> dict[str, str]:
    """Every place a version is written, by where (the chart's two, the package's own)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    init = (REPO / "operator" / "agentid" / "__init__.py").read_text()
    match = re.search(r'^__version__ = "([^"]+)"$', init, re.MULTILINE)
    return {
        "pyproject.toml version": str(project["version"]),
        "agentid.__version__": match.group(1) if match else "(missing)",
        "Chart.yaml version": str(chart["version"]),
        "Chart.yaml appVersion": str(chart["appVersion"]),
    }


def release_version() -> str:
    found = versions()
    expected = found["pyproject.toml version"]
    wrong = {where: version for where, version in found.items() if version != expected}
    if wrong:
        raise SystemExit(f"version mismatch: pyproject.toml says {expected}, but {wrong} (run `make set-version`)")
    return expected


def run(*argv: str | Path, cwd: Path = REPO) -> str:
    return subprocess.run([str(a) for a in argv], cwd=cwd, check=True, capture_output=True, text=True).stdout


def build(dist: Path, tools: Path, helm: str) -> None:
    version = release_version()
    if dist.exists():
        shutil.rmtree(dist)
    dist.mkdir(parents=True)
    run(tools / "python", "-m", "build", "--sdist", "--wheel", "--outdir", dist, REPO)
    run(tools / "twine", "check", "--strict", *sorted(dist.iterdir()))
    wheel = next(dist.glob("agentid_operator-*.whl"))
    with tempfile.TemporaryDirectory(prefix="agentid-image-env-") as scratch:
        env = Path(scratch) / "env"
        run(sys.executable, "-m", "venv", env)
        run(env / "bin" / "python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
            "--only-binary=:all:", wheel)  # fmt: skip
        run(env / "bin" / "python", "-m", "pip", "uninstall", "--quiet", "--yes", *IMAGE_REMOVES)
        frozen = _freeze(env)
        (dist / "image-requirements.txt").write_text(
            "# The Python packages of the agentid image, exactly (make release; the Dockerfile installs with them).\n"
            + "".join(f"{line}\n" for line in frozen)
        )
        sbom = dist / f"{DISTRIBUTION}-{version}.cdx.json"
        run(tools / "cyclonedx-py", "environment", "--output-reproducible", "--output-format", "JSON",
            "--output-file", sbom, "--mc-type", "application", "--pyproject", REPO / "pyproject.toml",
            env / "bin" / "python")  # fmt: skip
    run(helm, "package", CHART, "--destination", dist)


def _freeze(env: Path) -> list[str]:
    """name==version of every distribution in the environment (pip is gone: ask importlib.metadata)."""
    script = (
        "import importlib.metadata as m\n"
        "for d in sorted(m.distributions(), key=lambda d: d.metadata['Name'].lower()):\n"
        "    print(f\"{d.metadata['Name']}=={d.version}\")\n"
    )
    return run(env / "bin" / "python", "-c", script).split()


def checksums(dist: Path) -> None:
    lines = []
    for path in sorted(dist.iterdir()):
        if path.is_file() and path.name != CHECKSUMS:
            lines.append(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.name}\n")
    (dist / CHECKSUMS).write_text("".join(lines))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("step", choices=["build", "checksums", "version"])
    parser.add_argument("--dist", type=Path, default=REPO / "dist")
    parser.add_argument("--tools", type=Path, default=REPO / ".venv" / "tools" / "release" / "bin")
    parser.add_argument("--helm", default="helm")
    args = parser.parse_args(argv)
    try:
        if args.step == "version":
            print(release_version())
        elif args.step == "build":
            build(args.dist.resolve(), args.tools, args.helm)
        else:
            checksums(args.dist.resolve())
    except subprocess.CalledProcessError as failed:
        command = " ".join(str(part) for part in failed.cmd)
        print(f"error: `{command}` failed:\n{failed.stdout}{failed.stderr}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
