"""Where the shipped data files live.

The demo set and probe photos are committed under the repository's `data/`
folder, found relative to this file so it works from any working directory.
Set PIPELINE_DATA_DIR to point elsewhere (e.g. for a non-editable install,
where the repository folder is not next to the installed package).
"""

import os
from pathlib import Path

REPO_DATA_DIR: Path = Path(__file__).resolve().parents[2] / "data"
DATA_DIR: Path = Path(os.environ.get("PIPELINE_DATA_DIR") or REPO_DATA_DIR).expanduser().resolve()
