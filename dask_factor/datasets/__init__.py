"""dask_factor.datasets."""
