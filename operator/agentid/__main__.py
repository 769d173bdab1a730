"""``python -m agentid`` is the ``agentid`` command."""

import sys

from agentid.cli.main import main

sys.exit(main())
