"""dask_factor.io."""
