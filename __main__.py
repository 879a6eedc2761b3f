"""``python -m comfyui_gendeg`` is the ``gendeg`` command."""

import sys

from .cli import main

sys.exit(main())
