from __future__ import annotations

import sys

from ccas.cli import main

sys.exit(main())
