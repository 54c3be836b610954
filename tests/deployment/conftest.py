"""Deployment tests run real system software (podman, SLURM): root on Debian only."""

from __future__ import annotations

import os
import shutil

import pytest

ROOT_ON_DEBIAN = os.geteuid() == 0 and shutil.which("apt-get") is not None


def require_root_on_debian():
    if not ROOT_ON_DEBIAN:
        pytest.skip("needs root on Debian (installs and starts system packages)")
