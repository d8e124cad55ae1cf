"""dask_factor.kernels."""
