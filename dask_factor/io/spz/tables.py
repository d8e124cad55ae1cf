"""obs / var tables ("OVTB" blobs, spec section 3.7) <-> pandas DataFrames.

Column types and their pandas dtypes when read back:

=============  ============  ==================  =============================================
code           element       NA sentinel         pandas dtype on read
=============  ============  ==================  =============================================
0 INT32        i32           INT32_MIN           ``Int32`` (nullable)
1 FLOAT32      f32           NaN                 ``float32``
2 FLOAT64      f64           NaN                 ``float64``
3 BOOL         u8 0/1        255                 ``boolean`` (nullable)
4 UINT32       u32           0xFFFFFFFF          ``UInt32`` (nullable)
5 STRING_DICT  u32 code      0xFFFFFFFF          ``category`` (dictionary order = categories)
=============  ============  ==================  =============================================

When writing: categoricals keep their category order, string/object columns get a dictionary
in order of first appearance (RcppML's rule for R character vectors), booleans (also nullable)
become BOOL, signed/small integers INT32 (values must fit in int32 and differ from INT32_MIN),
``uint32``/``UInt32`` UINT32, ``float32``/``float16`` FLOAT32 and ``float64`` FLOAT64.  The
DataFrame index is not stored (keep names in a column).
"""

from __future__ import annotations

import struct

import numpy as np
import pandas as pd

from .errors import SpzFormatError

__all__ = ["parse_table", "pack_table"]

TABLE_MAGIC = b"OVTB"
_DESC = struct.Struct("<64sBBxxIQQ24s")
assert _DESC.size == 112
INT32, FLOAT32, FLOAT64, BOOL, UINT32, STRING = range(6)
_ELEM = {INT32: "<i4", FLOAT32: "<f4", FLOAT64: "<f8", BOOL: "u1", UINT32: "<u4", STRING: "<u4"}
_I32_NA = -(2**31)
_U32_NA = 0xFFFFFFFF


def parse_table(blob: bytes, path: str, which: str, n_rows: int) -> pd.DataFrame:
    """Decode an OVTB blob into a DataFrame, validating every offset and value.

    Parameters
    ----------
    blob : bytes
        The table's bytes (from its section offset to the next section).
    path, which : str
        File name and ``"obs"`` / ``"var"``, used in error messages.
    n_rows : int
        Expected number of rows (m for obs, n for var).

    Returns
    -------
    DataFrame
        ``n_rows`` rows, one column per stored column (dtypes in the module docstring).

    Examples
    --------
    >>> df = pd.DataFrame({"a": [1, 2]})
    >>> parse_table(pack_table(df, "var", 2), "mem", "var", 2)["a"].tolist()
    [1, 2]
    """
    where = f"{path}: {which} table"
    if len(blob) < 16:
        raise SpzFormatError(f"{where}: shorter than its 16-byte header ({len(blob)} bytes)")
    magic, rows, ncols, hbytes = struct.unpack_from("<4sIII", blob, 0)
    if magic != TABLE_MAGIC:
        raise SpzFormatError(f"{where}: bad magic {magic!r} (expected {TABLE_MAGIC!r})")
    if rows != n_rows:
        raise SpzFormatError(f"{where}: has {rows} rows, expected {n_rows}")
    if hbytes != 16 + 112 * ncols or hbytes > len(blob):
        raise SpzFormatError(
            f"{where}: header_bytes {hbytes} inconsistent with {ncols} columns / blob size "
            f"{len(blob)}"
        )
    columns: list[pd.Series] = []
    for c in range(ncols):
        raw_name, ctype, _nullable, dict_bytes, data_off, dict_off, _z = _DESC.unpack_from(
            blob, 16 + 112 * c
        )
        nul = raw_name.find(b"\0")
        if nul < 0:
            raise SpzFormatError(f"{where}: column {c} name is not NUL-terminated")
        try:
            name = raw_name[:nul].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SpzFormatError(f"{where}: column {c} name is not valid UTF-8") from exc
        if ctype not in _ELEM:
            raise SpzFormatError(f"{where}: column {name!r} has unknown type code {ctype}")
        dt = np.dtype(_ELEM[ctype])
        end = data_off + dt.itemsize * rows
        if data_off < hbytes or end > len(blob):
            raise SpzFormatError(
                f"{where}: column {name!r} data [{data_off}, {end}) outside the blob "
                f"({len(blob)} bytes)"
            )
        arr = np.frombuffer(blob, dt, count=rows, offset=data_off)
        columns.append(_to_series(arr, ctype, name, blob, dict_off, dict_bytes, where, hbytes))
    if not columns:
        return pd.DataFrame(index=pd.RangeIndex(rows))
    df = pd.concat(columns, axis=1)
    df.index = pd.RangeIndex(rows)
    return df


def _to_series(arr, ctype, name, blob, dict_off, dict_bytes, where, hbytes) -> pd.Series:
    if ctype == INT32:
        return pd.Series(pd.array(arr.astype(np.int32), dtype="Int32"), name=name).mask(
            arr == _I32_NA
        )
    if ctype == UINT32:
        return pd.Series(pd.array(arr.astype(np.uint32), dtype="UInt32"), name=name).mask(
            arr == _U32_NA
        )
    if ctype == FLOAT32:
        return pd.Series(arr.astype(np.float32), name=name)
    if ctype == FLOAT64:
        return pd.Series(arr.astype(np.float64), name=name)
    if ctype == BOOL:
        if np.any((arr > 1) & (arr != 255)):
            raise SpzFormatError(f"{where}: BOOL column {name!r} holds values other than 0/1/255")
        vals = pd.array(arr == 1, dtype="boolean")
        vals[arr == 255] = pd.NA
        return pd.Series(vals, name=name)
    # STRING_DICT
    if dict_bytes == 0:
        cats: list[str] = []
    else:
        if dict_off < hbytes or dict_off + dict_bytes > len(blob):
            raise SpzFormatError(
                f"{where}: column {name!r} dictionary [{dict_off}, {dict_off + dict_bytes}) "
                f"outside the blob ({len(blob)} bytes)"
            )
        raw = blob[dict_off : dict_off + dict_bytes]
        if raw[-1:] != b"\0":
            raise SpzFormatError(f"{where}: column {name!r} dictionary is not NUL-terminated")
        try:
            cats = [s.decode("utf-8") for s in raw[:-1].split(b"\0")]
        except UnicodeDecodeError as exc:
            raise SpzFormatError(f"{where}: column {name!r} dictionary is not UTF-8") from exc
        if len(set(cats)) != len(cats):
            raise SpzFormatError(f"{where}: column {name!r} dictionary has duplicate entries")
    na = arr == _U32_NA
    if np.any(arr[~na] >= len(cats)):
        raise SpzFormatError(
            f"{where}: column {name!r} has codes >= dictionary size {len(cats)}"
        )
    codes = np.where(na, -1, arr.astype(np.int64))
    return pd.Series(pd.Categorical.from_codes(codes, categories=cats), name=name)


# ----------------------------------------------------------------------------- writing


def _col_name(name: object, arg: str, used: set[bytes]) -> bytes:
    raw = str(name).encode("utf-8")
    if b"\0" in raw:
        raise ValueError(f"{arg}: column name {name!r} contains a NUL character")
    cut = raw[:63]
    while cut:  # do not split a UTF-8 sequence
        try:
            cut.decode("utf-8")
            break
        except UnicodeDecodeError:
            cut = cut[:-1]
    if cut in used:
        raise ValueError(
            f"{arg}: column name {name!r} is not unique after truncation to 63 UTF-8 bytes"
        )
    used.add(cut)
    return cut


def _encode_strings(values: list[str], arg: str, name: object) -> bytes:
    parts = []
    for v in values:
        b = str(v).encode("utf-8")
        if b"\0" in b:
            raise ValueError(f"{arg}: column {name!r} has a string containing a NUL character")
        parts.append(b + b"\0")
    return b"".join(parts)


def _column_payload(s: pd.Series, arg: str) -> tuple[int, bytes, bytes]:
    """Return (col_type, array bytes, dictionary bytes) for one column."""
    name = s.name
    dtype = s.dtype
    isna = s.isna().to_numpy()
    if isinstance(dtype, pd.CategoricalDtype):
        cats = [str(c) for c in dtype.categories]
        if len(set(cats)) != len(cats):
            raise ValueError(f"{arg}: column {name!r} has categories that collide as strings")
        codes = s.cat.codes.to_numpy().astype(np.int64)
        arr = np.where(codes < 0, _U32_NA, codes).astype("<u4")
        return STRING, arr.tobytes(), _encode_strings(cats, arg, name)
    if pd.api.types.is_bool_dtype(dtype):
        vals = s.to_numpy(dtype=object)
        arr = np.array([255 if m else (1 if v else 0) for v, m in zip(vals, isna)], dtype="u1")
        return BOOL, arr.tobytes(), b""
    if pd.api.types.is_integer_dtype(dtype):
        unsigned = pd.api.types.is_unsigned_integer_dtype(dtype)
        ints = s[~isna].to_numpy(dtype=np.uint64 if unsigned else np.int64)
        if str(dtype).lower() == "uint32":
            if np.any(ints == _U32_NA):
                raise ValueError(f"{arg}: uint32 column {name!r} holds 4294967295 (the NA code)")
            arr = np.full(len(s), _U32_NA, dtype="<u4")
            arr[~isna] = ints
            return UINT32, arr.tobytes(), b""
        too_big = ints.size and ints.max() > 2**31 - 1
        too_small = ints.size and not unsigned and ints.min() <= _I32_NA
        if too_big or too_small:
            raise ValueError(
                f"{arg}: integer column {name!r} has values outside (-2**31, 2**31 - 1]; "
                "convert it to float64 to store it"
            )
        arr = np.full(len(s), _I32_NA, dtype="<i4")
        arr[~isna] = ints
        return INT32, arr.tobytes(), b""
    if pd.api.types.is_float_dtype(dtype):
        if str(dtype).lower() in ("float32", "float16"):
            return FLOAT32, s.to_numpy(np.float32, na_value=np.nan).astype("<f4").tobytes(), b""
        return FLOAT64, s.to_numpy(np.float64, na_value=np.nan).astype("<f8").tobytes(), b""
    if pd.api.types.is_string_dtype(dtype) or pd.api.types.is_object_dtype(dtype):
        vals = s.to_numpy(dtype=object)
        order: dict[str, int] = {}
        codes = np.full(len(s), _U32_NA, dtype="<u4")
        for i, (v, m) in enumerate(zip(vals, isna)):
            if m:
                continue
            if not isinstance(v, str):
                raise ValueError(
                    f"{arg}: column {name!r} mixes strings with {type(v).__name__} values; "
                    "only str/NA object columns can be stored"
                )
            codes[i] = order.setdefault(v, len(order))
        return STRING, codes.tobytes(), _encode_strings(list(order), arg, name)
    raise ValueError(
        f"{arg}: column {name!r} has unsupported dtype {dtype}; use string, categorical, "
        "bool, integer or float columns"
    )


def pack_table(df: pd.DataFrame, arg: str, n_rows: int) -> bytes:
    """Serialise a DataFrame to an OVTB blob (validating it first).

    Parameters
    ----------
    df : DataFrame
        The table; a dict of columns is accepted too.
    arg : str
        ``"obs"`` or ``"var"``, used in error messages.
    n_rows : int
        Required number of rows (m for obs, n for var).

    Returns
    -------
    bytes

    Examples
    --------
    >>> len(pack_table(pd.DataFrame({"x": [1.0, 2.0]}), "var", 2))
    144
    """
    if not isinstance(df, pd.DataFrame):
        try:
            df = pd.DataFrame(df)
        except Exception as exc:  # noqa: BLE001 - report as a clean input error
            raise ValueError(f"{arg} must be a pandas DataFrame, got {type(df).__name__}") from exc
    if len(df) != n_rows:
        what = "row" if arg == "obs" else "column"
        raise ValueError(
            f"{arg} has {len(df)} rows but the matrix has {n_rows} {what}s "
            f"({arg} is one row per matrix {what})"
        )
    used: set[bytes] = set()
    names, payloads = [], []
    for i in range(df.shape[1]):
        col = df.iloc[:, i]
        names.append(_col_name(df.columns[i], arg, used))
        payloads.append(_column_payload(col, arg))
    ncols = len(names)
    hbytes = 16 + 112 * ncols
    head = [struct.pack("<4sIII", TABLE_MAGIC, n_rows, ncols, hbytes)]
    body = []
    off = hbytes
    for name, (ctype, arr, dic) in zip(names, payloads):
        data_off = off
        off += len(arr)
        dict_off = off if ctype == STRING else 0
        off += len(dic)
        head.append(_DESC.pack(name, ctype, 0, len(dic), data_off, dict_off, b"\0" * 24))
        body.append(arr)
        body.append(dic)
    return b"".join(head + body)
