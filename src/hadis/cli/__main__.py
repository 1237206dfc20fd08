"""``python -m hadis.cli``: the ``hadis`` command."""

import sys

from hadis.cli.main import main

sys.exit(main())
