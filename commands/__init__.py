"""Sub-commands of the `gendeg` command line; each module defines ``register(subparsers)``."""
