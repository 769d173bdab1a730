"""The two ways to build the agentid image cannot drift: the Dockerfile and `make image` (agentid.devcluster.images)
run the same hack/image scripts, and the runtime settings (user, entrypoint, command, environment, working
directory) are the same on both sides."""

from __future__ import annotations

import json
import re
from pathlib import Path

from agentid.devcluster import images

REPO = Path(__file__).resolve().parents[2]


def _instructions() -> list[tuple[str, str]]:
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    runtime = text.rsplit("\nFROM ", 1)[1]  # the final stage is what the image runs
    return [
        (line.split(None, 1)[0], line.split(None, 1)[1].strip())
        for line in runtime.splitlines()[1:]
        if line.strip() and not line.startswith("#")
    ]


def test_the_dockerfile_builds_with_the_shared_scripts() -> None:
    build = (REPO / "Dockerfile").read_text()
    assert "COPY hack/image ./hack/image" in build
    assert re.search(r"RUN sh hack/image/wheelhouse\.sh /wheels\s*\\\s*&& sh hack/image/install\.sh /wheels", build)
    for script in ("wheelhouse.sh", "install.sh"):
        assert (REPO / "hack" / "image" / script).is_file()


def test_the_runtime_settings_match_the_dockerfile() -> None:
    instructions = _instructions()
    by_kind: dict[str, list[str]] = {}
    for kind, value in instructions:
        by_kind.setdefault(kind, []).append(value)
    assert by_kind["USER"] == [images.AGENTID_USER]
    assert by_kind["WORKDIR"] == [images.AGENTID_WORKDIR]
    assert json.loads(by_kind["ENTRYPOINT"][0]) == list(images.AGENTID_ENTRYPOINT)
    assert json.loads(by_kind["CMD"][0]) == list(images.AGENTID_CMD)
    env = dict(re.findall(r"(\w+)=(\S+)", " ".join(by_kind["ENV"])))
    assert set(env) == set(images.AGENTID_ENV)
    assert env["PATH"].split(":")[0] == images.AGENTID_ENV["PATH"].split(":")[0] == "/opt/agentid/bin"
    for key in set(env) - {"PATH"}:
        assert env[key] == images.AGENTID_ENV[key]


def test_the_image_key_ignores_what_the_build_itself_writes(tmp_path: Path) -> None:
    # The wheel build rewrites operator/*.egg-info (its PKG-INFO holds the README): counting it made every change to
    # the README or pyproject.toml build the image twice, once per key.
    module = tmp_path / "operator" / "agentid" / "__init__.py"
    module.parent.mkdir(parents=True)
    module.write_text("")
    for by_product in ("agentid_operator.egg-info/PKG-INFO", "agentid/__pycache__/__init__.cpython-311.pyc"):
        (tmp_path / "operator" / by_product).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "operator" / by_product).write_text("built")
    assert [p.relative_to(tmp_path) for p in images._source_files(tmp_path)] == [
        Path("pyproject.toml"),
        Path("README.md"),
        Path("operator/agentid/__init__.py"),
    ]
