"""Print the pins of the oldest versions we claim, for the libraries whose internals our code touches.

Reads the lower bounds of `transformers`, `trl` and `accelerate` from setup.cfg's install_requires and
prints `name==lower` for each one whose installed version differs (nothing when the fresh install already
resolved every lower bound, as it does when the newest release is also the oldest we support).
"""

from __future__ import annotations

import configparser
import re
from importlib.metadata import version
from pathlib import Path

from packaging.version import Version

TOUCHED = ("transformers", "trl", "accelerate")

config = configparser.ConfigParser()
config.read(Path(__file__).resolve().parents[1] / "setup.cfg")
pins = []
for line in config["options"]["install_requires"].split("\n"):
    match = re.match(r"\s*([A-Za-z0-9_.-]+)\s*>=\s*([0-9][^,\s]*)", line)
    if match and match.group(1).lower() in TOUCHED and Version(version(match.group(1))) != Version(match.group(2)):
        pins.append(f"{match.group(1)}=={match.group(2)}")
print(" ".join(pins))
