"""Sub-commands of ``bench``; each module defines ``register(subparsers)``."""
