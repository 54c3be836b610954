"""Brain-age models: features in, age out; bundles; training with site-aware validation.

Pure numerical code: nothing here imports Nipype.
"""
