"""`make release` as a user of the release sees it: the wheel installs in a clean virtualenv and runs, the packaged
chart (with its CRDs) installs on the test cluster, the SBOM lists exactly the image environment's packages, and
SHA256SUMS covers every file.

Slow (a minute or two: the build, two virtualenvs from the package index) and therefore one build per session.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import tarfile
import tomllib
import uuid
import venv
from pathlib import Path

import pytest
import yaml

from tests.integration.test_chart import helm
from tests.support.clusters import ClusterHandle

pytestmark = pytest.mark.cluster
REPO = Path(__file__).resolve().parents[2]
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
FREEZE = "import importlib.metadata as m\nfor d in m.distributions(): print(f\"{d.metadata['Name']}=={d.version}\")"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        ["make", "--no-print-directory", "release", f"DIST={out}"],
        cwd=REPO, capture_output=True, text=True, timeout=1200, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def clean_venv(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv with nothing but the released wheel (and what it depends on)."""
    where = tmp_path_factory.mktemp("clean") / "venv"
    venv.create(where, with_pip=True)
    wheel = next(dist.glob("agentid_operator-*.whl"))
    subprocess.run(
        [where / "bin" / "python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check", wheel],
        check=True, timeout=900, capture_output=True,
    )  # fmt: skip
    return where


def test_the_release_holds_the_python_distributions_the_chart_the_sbom_and_checksums(dist: Path) -> None:
    names = {path.name for path in dist.iterdir()}
    assert {
        f"agentid_operator-{VERSION}-py3-none-any.whl",
        f"agentid_operator-{VERSION}.tar.gz",
        f"agentid-operator-{VERSION}.tgz",
        f"agentid-operator-{VERSION}.cdx.json",
        "image-requirements.txt",
        "SHA256SUMS",
    } <= names
    sums = dict(reversed(line.split("  ", 1)) for line in (dist / "SHA256SUMS").read_text().splitlines())
    assert set(sums) == names - {"SHA256SUMS"}
    for name, digest in sums.items():
        assert hashlib.sha256((dist / name).read_bytes()).hexdigest() == digest, name


def test_the_wheel_installs_in_a_clean_virtualenv_and_runs(clean_venv: Path, tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    for command in (["agentid", "--help"], ["kubectl-agentid", "list", "--help"], ["agentid", "completion", "bash"]):
        result = subprocess.run([clean_venv / "bin" / command[0], *command[1:]], capture_output=True, text=True,
                                cwd=tmp_path, env=env, timeout=60, check=False)  # fmt: skip
        assert result.returncode == 0, (command, result.stderr)
    version = subprocess.run([clean_venv / "bin" / "agentid", "version", "-o", "json"], capture_output=True,
                             text=True, cwd=tmp_path, env=env, timeout=60, check=True)  # fmt: skip
    assert json.loads(version.stdout)["agentid"] == VERSION
    probe = "import agentid, agentid.cli.commands; print(agentid.__file__)"
    where = subprocess.run([clean_venv / "bin" / "python", "-c", probe],
                           capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60, check=True)  # fmt: skip
    assert where.stdout.strip().startswith(str(clean_venv)), "imported from the wheel, not the checkout"


def test_the_sbom_lists_exactly_the_packages_of_the_image_environment(dist: Path, clean_venv: Path) -> None:
    sbom = json.loads(next(dist.glob("*.cdx.json")).read_text())
    assert sbom["bomFormat"] == "CycloneDX"
    root = sbom["metadata"]["component"]  # agentid-operator itself: the root, its dependencies the components
    assert (root["name"], root["version"]) == ("agentid-operator", VERSION)
    listed = {canonical(c["name"]): c["version"] for c in sbom["components"]} | {root["name"]: root["version"]}
    pinned = dict(
        (canonical(name), version)
        for name, version in (line.split("==") for line in (dist / "image-requirements.txt").read_text().split()
                              if "==" in line)
    )  # fmt: skip
    assert listed == pinned
    for needed in ("agentid-operator", "kopf", "kubernetes", "pydantic", "cryptography", "pyjwt", "aiohttp"):
        assert needed in listed
    assert not {"pip", "setuptools", "wheel"} & set(listed), "the image's virtualenv has no installers"
    installed = subprocess.run(
        [clean_venv / "bin" / "python", "-c", FREEZE], capture_output=True, text=True, timeout=60, check=True
    ).stdout.split()
    clean = {canonical(n): v for n, v in (line.split("==") for line in installed)}
    for tool in ("pip", "setuptools", "wheel"):
        clean.pop(tool, None)
    assert clean == listed, "the SBOM lists what `pip install agentid-operator` installs"


def test_the_packaged_chart_carries_the_crds_and_installs(
    dist: Path, cluster: ClusterHandle, crds: None, tmp_path: Path
) -> None:
    packaged = dist / f"agentid-operator-{VERSION}.tgz"
    with tarfile.open(packaged) as archive:
        members = {member.name: member for member in archive.getmembers()}
        chart = yaml.safe_load(archive.extractfile(members["agentid-operator/Chart.yaml"]).read())  # type: ignore[union-attr]
        for crd in sorted((REPO / "crds").glob("*.yaml")):
            shipped = archive.extractfile(members[f"agentid-operator/crds/{crd.name}"])
            assert shipped is not None
            assert shipped.read() == crd.read_bytes()
    assert (chart["version"], chart["appVersion"]) == (VERSION, VERSION)

    name = f"rel-{uuid.uuid4().hex[:6]}"
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({
        "webhook": {"namespaceSelector": {"matchLabels": {"agentid.dev/release-test": name}},
                    "agentPolicyFailurePolicy": "Ignore"},
    }))  # fmt: skip
    namespace = f"{name}-system"
    try:
        helm("install", name, str(packaged), f"--kubeconfig={cluster.kubeconfig}", "--namespace", namespace,
             "--create-namespace", f"--values={values}")  # fmt: skip
        listed = json.loads(helm("list", f"--kubeconfig={cluster.kubeconfig}", "-n", namespace, "-o", "json").stdout)
        assert [(r["name"], r["status"], r["chart"], r["app_version"]) for r in listed] == [
            (name, "deployed", f"agentid-operator-{VERSION}", VERSION)
        ]
        deployments = cluster.kubectl("get", "deployments", "-n", namespace, "-o", "name").stdout.split()
        assert sorted(deployments) == [
            f"deployment.apps/{name}-agentid-operator",
            f"deployment.apps/{name}-agentid-tokens",
        ]
    finally:
        helm("uninstall", name, f"--kubeconfig={cluster.kubeconfig}", "-n", namespace, "--wait", check=False)
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", "--ignore-not-found")
