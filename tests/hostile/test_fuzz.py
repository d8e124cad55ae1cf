"""Issue 17, item 5: seeded mutation fuzzing of every reader, in a subprocess with a watchdog.

``fuzz.py`` applies mutation ``i`` of seed 0 (replayable alone: ``python tests/hostile/fuzz.py
--kind K --only i --show``) and reads the result the way a user would.  What must hold:

* no crash and no hang, for every kind;
* no unclear error: every refusal is a ``MatrixFormatError`` (or a ``ValueError``/``OSError``
  naming the file), never a bare ``KeyError``/``IndexError``/``JSONDecodeError``;
* no silent wrong read of a damaged ``.spz`` whose CRC was left alone, nor of damaged bytes in
  a zarr or h5ad store we wrote (zstd, CRC32C and fletcher32 checksums, every chunk written);
* the silent-wrong fraction of forged ``.spz`` files (CRC recomputed; read plainly, and with
  ``SpzFile.verify()`` checking the stored transpose), of deliberate edits and of
  AnnData zarr stores (blosc, no checksum) is measured and printed (``pytest -s``).

CI runs 100 mutations of each kind (a few seconds each); ``DASK_FACTOR_SCALE=full`` runs 1,000.
"""

from __future__ import annotations

import os

import fuzz
import pytest

FULL = os.environ.get("DASK_FACTOR_SCALE", "").lower() == "full"
COUNT = 1000 if FULL else 100


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("kind", fuzz.KINDS)
def test_fuzz(kind):
    res = fuzz.run(kind, COUNT, seed=0)
    print("\n" + fuzz.summary_line(res))
    bad = [f"#{r['i']} {r['outcome']}: {r['what']} -> {r['detail']}" for r in res["failures"]]
    assert not bad, "\n".join(bad)
    assert sum(res["counts"].values()) == COUNT
    if kind in ("spz-kept", "zarr", "zarr-scan", "h5ad"):
        wrong = [r for r in res["wrong"] if kind == "spz-kept" or not fuzz.is_edit(r)]
        assert not wrong, [f"#{r['i']}: {r['what']}" for r in wrong]
    if kind in ("spz-recomputed", "spz-verified"):  # only unprotected payload bytes pass
        wrong, changed = fuzz.silent_wrong(res)
        assert wrong <= 0.1 * changed, fuzz.summary_line(res)


def test_the_watchdog_counts_crashes_and_hangs(monkeypatch):
    monkeypatch.setenv("DASK_FACTOR_FUZZ_SELFTEST", "crash:2,hang:4")
    res = fuzz.run("spz-kept", 7, seed=1, timeout=5)
    assert res["counts"]["crash"] == 1 and res["counts"]["hang"] == 1
    assert [r["outcome"] for r in res["cases"]][2] == "crash"
    assert [r["outcome"] for r in res["cases"]][4] == "hang"
    assert res["counts"]["rejected"] == 5  # the others ran, in resumed workers
