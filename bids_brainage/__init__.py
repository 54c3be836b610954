"""bids_brainage: brain age from T1-weighted MRI as a BIDS-App."""

import os

# Nipype asks a web service for updates when imported; this app must work offline.
os.environ.setdefault("NIPYPE_NO_ET", "1")

from .__about__ import __version__  # noqa: E402

__all__ = ["__version__"]
