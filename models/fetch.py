#!/usr/bin/env python3
"""Obtain and verify the default detector: a thin wrapper around `vigie model fetch`."""

import sys

from vigie.cli import main

if __name__ == "__main__":
    sys.exit(main(["model", "fetch", *sys.argv[1:]]))
