"""``python -m hwnas`` (and ``torchrun -m hwnas``) is the same CLI as ``hwnas``."""

from __future__ import annotations

from hwnas.cli import main

if __name__ == "__main__":
    main()
