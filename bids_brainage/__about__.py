"""Version and citation, kept in one place."""

__version__ = "0.1.0"
__packagename__ = "bids_brainage"
__url__ = "https://github.com/bids-brainage/bids_brainage"
__citation__ = (
    "bids_brainage {version}: a BIDS-App for global and voxel-wise brain age from T1-weighted MRI."
)
