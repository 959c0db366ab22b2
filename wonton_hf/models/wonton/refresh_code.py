"""Refresh the model code that an exported checkpoint carries for `trust_remote_code`.

`save_pretrained` copies `configuration_wonton.py`, `modeling_wonton.py` and `architecture_wonton.py` next to the weights, so a
directory keeps the code of the package version that wrote it. With `wonton_hf` installed that copy is never
used (`AutoModelForCausalLM.from_pretrained(path)` takes the installed, registered classes); with
`trust_remote_code=True`, or without the package, transformers runs the copy. A directory written before
transformers 5.24 support (wonton_hf commit 295861a) carries code whose cached generation is wrong on 5.24,
so this rewrites the code files (and `auto_map`) from the installed package, leaving the weights alone:

    python -m wonton_hf.models.wonton.refresh_code path/to/checkpoint [more/checkpoints ...]
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

CODE_FILES = ("architecture_wonton.py", "configuration_wonton.py", "modeling_wonton.py")
AUTO_MAP = {
    "AutoConfig": "configuration_wonton.WontonConfig",
    "AutoModel": "modeling_wonton.WontonModel",
    "AutoModelForCausalLM": "modeling_wonton.WontonForCausalLM",
}


def refresh_remote_code(directory: str | Path) -> list[Path]:
    """Copy the installed model code into `directory` and point its `config.json` `auto_map` at it."""
    directory = Path(directory)
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{directory} has no config.json: not a saved model directory.")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if config.get("model_type") != "wonton":
        raise ValueError(f"{config_path} has model_type {config.get('model_type')!r}, not 'wonton'.")
    source = Path(__file__).resolve().parent
    written = []
    for name in CODE_FILES:
        shutil.copyfile(source / name, directory / name)
        written.append(directory / name)
    config["auto_map"] = {**config.get("auto_map", {}), **AUTO_MAP}
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return written


def main(argv: list[str] | None = None) -> int:
    paths = sys.argv[1:] if argv is None else argv
    if not paths or any(p in ("-h", "--help") for p in paths):
        print(__doc__.strip())
        return 0 if paths else 2
    for path in paths:
        refresh_remote_code(path)
        print(f"refreshed {', '.join(CODE_FILES)} in {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
