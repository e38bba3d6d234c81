"""``python -m dqlite``: the dqlite shell (see ``dqlite.shell``)."""

import sys

from dqlite.shell import main

sys.exit(main())
