"""Fixed layouts derived from the construct declarations.

The hot paths (frame header, telemetry) must not pay construct's interpretation cost per frame, yet
the format must be declared in one place. This module walks a declaration made only of fixed-size
fields (``FormatField``, ``Const``, ``Enum`` over a ``FormatField``, nested ``Struct`` and ``Array``
with a count taken from a sibling field ``n_<name>``) and derives:

* a ``struct`` format string (``struct_format``), used for the header;
* a packed numpy record dtype for given array counts (``record_dtype``), used to encode telemetry
  of many nodes in one vectorised pass and to decode it without a Python loop per field.

A declaration the walker cannot lay out raises ``TypeError`` at import time, not on the wire.
"""

from __future__ import annotations

import construct as c
import numpy as np

_NUMPY_CODES = {
    "B": "u1",
    "b": "i1",
    "H": "u2",
    "h": "i2",
    "I": "u4",
    "i": "i4",
    "L": "u4",
    "l": "i4",
    "Q": "u8",
    "q": "i8",
    "f": "f4",
    "d": "f8",
}


def _unwrap(con: c.Construct) -> c.Construct:
    """Strip the wrappers that do not change the bytes (names, enums, docs)."""
    while True:
        if isinstance(con, (c.Renamed, c.Enum, c.FlagsEnum)):
            con = con.subcon
        else:
            return con


def _format_char(con: c.FormatField) -> str:
    fmt = con.fmtstr
    if fmt[0] != "<":
        raise TypeError(f"field format {fmt!r} is not little-endian")
    return fmt[1:]


def fields(struct: c.Struct) -> list[tuple[str, c.Construct]]:
    """The named members of a Struct, wrappers stripped; Terminated markers are skipped."""
    out = []
    for sub in struct.subcons:
        if sub is c.Terminated:
            continue
        if not sub.name:
            raise TypeError(f"unnamed member {sub!r} cannot be laid out")
        out.append((sub.name, _unwrap(sub)))
    return out


def struct_format(struct: c.Struct, **counts: int) -> str:
    """A ``struct`` format for a Struct of scalars, constants and counted arrays of Structs.

    Arrays are laid out ``counts[name]`` times over; the count fields themselves are ordinary
    scalars in the format.
    """
    return "<" + _format_body(struct, counts)


def _format_body(struct: c.Struct, counts: dict[str, int]) -> str:
    parts = []
    for name, con in fields(struct):
        if isinstance(con, c.FormatField):
            parts.append(_format_char(con))
        elif isinstance(con, c.Const) and isinstance(con.value, bytes):
            parts.append(f"{len(con.value)}s")
        elif isinstance(con, c.Const) and isinstance(_unwrap(con.subcon), c.FormatField):
            parts.append(_format_char(_unwrap(con.subcon)))
        elif isinstance(con, c.Array):
            item = _unwrap(con.subcon)
            if not isinstance(item, c.Struct) or name not in counts:
                raise TypeError(f"array {name!r} needs a Struct item and a count")
            parts.append(_format_body(item, counts) * counts[name])
        elif isinstance(con, c.Struct):
            parts.append(_format_body(con, counts))
        else:
            raise TypeError(f"field {name!r} ({type(con).__name__}) has no fixed struct format")
    return "".join(parts)


def _dtype(struct: c.Struct, counts: dict[str, int]) -> list[tuple]:
    spec: list[tuple] = []
    for name, con in fields(struct):
        if isinstance(con, c.FormatField):
            spec.append((name, "<" + _NUMPY_CODES[_format_char(con)]))
        elif isinstance(con, c.Const) and isinstance(con.value, bytes):
            spec.append((name, f"S{len(con.value)}"))
        elif isinstance(con, c.Const) and isinstance(_unwrap(con.subcon), c.FormatField):
            spec.append((name, "<" + _NUMPY_CODES[_format_char(_unwrap(con.subcon))]))
        elif isinstance(con, c.Array):
            item = _unwrap(con.subcon)
            if not isinstance(item, c.Struct):
                raise TypeError(f"array {name!r} must hold Structs")
            if name not in counts:
                raise TypeError(f"array {name!r} needs a count")
            spec.append((name, np.dtype(_dtype(item, counts)), (counts[name],)))
        elif isinstance(con, c.Struct):
            spec.append((name, np.dtype(_dtype(con, counts))))
        else:
            raise TypeError(f"field {name!r} ({type(con).__name__}) has no fixed layout")
    return spec


_DTYPES: dict[tuple[int, tuple[tuple[str, int], ...]], np.dtype] = {}


def record_dtype(struct: c.Struct, **counts: int) -> np.dtype:
    """The packed numpy dtype of ``struct`` with the given array lengths (``dies=4, ...``)."""
    key = (id(struct), tuple(sorted(counts.items())))
    dtype = _DTYPES.get(key)
    if dtype is None:
        dtype = _DTYPES[key] = np.dtype(_dtype(struct, counts))
    return dtype


def array_names(struct: c.Struct) -> list[str]:
    """Names of the counted arrays of a Struct, in declaration order."""
    return [name for name, con in fields(struct) if isinstance(con, c.Array)]
