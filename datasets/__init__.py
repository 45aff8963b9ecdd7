"""Dataset loaders: download (with checksums), preprocess and cache each dataset.

Use :func:`datasets.loader.load_dataset` and :func:`datasets.loader.load_supplemental_info`.
"""
