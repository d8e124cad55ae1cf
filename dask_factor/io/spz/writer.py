def write_spz(*a, **k): raise NotImplementedError
