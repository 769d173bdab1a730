"""`make image`: build the agentid image without Docker (agentid.devcluster.images) and print its archive.

When an `agentid dev up --with-node` is running, the image is also imported into its node, ready for
`helm install ... --set image.repository=localhost/agentid --set image.tag=dev --set image.pullPolicy=Never`.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from agentid.cli.dev import state_file
from agentid.devcluster import images
from agentid.devcluster import node as devnode

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str]) -> int:
    archive = images.agentid_image(REPO)
    print(f"{archive.name} {archive.path}")
    if argv:  # `make release`: a copy in the release folder
        shutil.copyfile(archive.path, argv[0])
        print(f"copied to {argv[0]}")
    state = json.loads(state_file().read_text()) if state_file().exists() else {}
    socket = state.get("node", {}).get("containerdSocket")
    if socket and Path(socket).exists():
        took = devnode.import_image(Path(socket), archive)
        print(f"imported into the dev node in {took:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
