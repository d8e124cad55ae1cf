"""dask_factor.graph."""
