"""Where the shipped data files live.

The demo set, the demo segmentation scenes and the probe photos ship inside the package
(``pipeline/data/shipped/``, read through importlib.resources), so they are found from any
working directory and in an installed wheel. Set PIPELINE_DATA_DIR to use another folder of the
same layout.
"""

import os
from pathlib import Path

from pipeline.resources import shipped

SHIPPED_DATA_DIR: Path = shipped("data", "shipped")
DATA_DIR: Path = Path(os.environ.get("PIPELINE_DATA_DIR") or SHIPPED_DATA_DIR).expanduser().resolve()
