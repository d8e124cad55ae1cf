"""dask_factor.engine."""
