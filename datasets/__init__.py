"""Dataset loaders: download (with checksums), preprocess and cache each dataset.

Use :func:`datasets.loader.load_dataset` and :func:`datasets.loader.load_supplemental_info`.
Modules: ``common`` (DataSet, Datasets, helpers), ``download`` (verified atomic downloads),
``hospital``, ``spam``, ``mnist``, ``cifar10``, ``processed_animals`` (dogfish, animals),
``babble`` (cdr, reduced_cdr and supplements), ``mnli``, ``sklearn_data``, ``synthetic``;
``safe_pickle`` reads third-party pickles without running code. See docs/design.md, 'Datasets and preprocessing'.
"""
