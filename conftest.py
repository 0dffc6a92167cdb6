"""Set before anything imports huggingface_hub (it reads these once, at import).

The suite never downloads: hub ids resolve only from a cache a test lays out itself.
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
