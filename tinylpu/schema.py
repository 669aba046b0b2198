"""One validation layer for every YAML file tinylpu reads.

``parse_yaml(text, source)`` reads a document and remembers the line of every mapping key and
list item; a :class:`Doc` then checks fields against a schema and reports the first problem as a
:class:`SchemaError` whose message reads::

    FILE:LINE: field 'a.b.c': <what is wrong, and what is allowed>

Two ways to check a document, sharing the same messages:

* declarative: ``Map({"lanes": Int(4, 512, pow2=True), "name": Str(), ...})`` and friends
  (:class:`Int`, :class:`Num`, :class:`Str`, :class:`Choice`, :class:`Bool`, :class:`List`,
  :class:`Map`, :class:`Dict`), read with ``doc.read(spec)``: every field typed and
  range-checked, unknown keys refused (the message lists the allowed ones), defaults filled in,
  ``null`` accepted only where a field is declared ``nullable``; a ``check`` function per mapping
  adds the cross-field rules;
* one field at a time: ``doc.int("mem.depth", 2, 65536, pow2=True)``, ``doc.num(...)``,
  ``doc.get(...)``, ``doc.err(path, message)`` (the chip-config loader, ``tinylpu/config.py``).

Paths are dotted strings (``"c2c.width_bits"``) or tuples (``("classes", 0, "share")``, shown as
``classes[0].share``).  Integers reject booleans; numbers reject booleans, NaN and infinities.
"""

from __future__ import annotations

import math
import re

import yaml

__all__ = ["SchemaError", "REQUIRED", "OMIT", "Doc", "parse_yaml", "load_yaml", "show", "fmt_path",
           "Spec", "Any", "Int", "Num", "Str", "Choice", "Bool", "List", "Map", "Dict"]


class _Sentinel:
    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return self.name


#: Default meaning "the field must be given".  ``KeyError`` is accepted too (the older spelling).
REQUIRED = _Sentinel("REQUIRED")
#: Default meaning "an absent field stays absent" (declarative specs only).
OMIT = _Sentinel("OMIT")


def _required(default):
    return default is REQUIRED or default is KeyError


class SchemaError(ValueError):
    """A YAML input is wrong: the message names the file, the line, the field and what is allowed.

    ``SchemaError(source, field, message, line=None)``; ``field`` None for a problem with the
    whole file.  ``SchemaError(message)`` alone is a plain message (for subclasses that also
    report problems that are not about a field).  A subclass with ``line_after_field = True``
    writes ``FILE: field 'a.b' (line N): ...`` instead (kept where callers match ``FILE: field``)."""

    line_after_field = False

    def __init__(self, source, field=None, message=None, line=None):
        self.source, self.field, self.message, self.line = source, field, message, line
        if field is None and message is None:
            text = str(source)
        elif field in (None, "", "-"):
            text = f"{source}:{line}: {message}" if line else f"{source}: {message}"
        elif self.line_after_field:
            text = f"{source}: field '{field}'{f' (line {line})' if line else ''}: {message}"
        else:
            text = f"{source}:{line}: field '{field}': {message}" if line else f"{source}: field '{field}': {message}"
        super().__init__(text)


# ---------------------------------------------------------------------------------------------
# showing values and paths
# ---------------------------------------------------------------------------------------------

def show(v, limit=40):
    """A value as the YAML author would recognize it (null, true, 'text', 1e+30, [1, 2])."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        if math.isnan(v):
            return ".nan"
        if math.isinf(v):
            return ".inf" if v > 0 else "-.inf"
        return f"{v:g}"
    if isinstance(v, (list, dict)):
        try:
            s = yaml.safe_dump(v, default_flow_style=True, width=1 << 16).strip()
        except yaml.YAMLError:          # pragma: no cover - plain data always dumps
            s = repr(v)
        if isinstance(v, dict) and not v:
            s = "{}"
        return s if len(s) <= limit else s[:limit - 3] + "..."
    s = repr(v)
    return s if len(s) <= limit else s[:limit - 4] + "...'"


def _n(x):
    """A range bound: integers as they are, floats in %g."""
    return str(x) if isinstance(x, int) and not isinstance(x, bool) else f"{x:g}"


def _as_tuple(path):
    if isinstance(path, tuple):
        return path
    if path in (None, ""):
        return ()
    out = []
    for part in str(path).split("."):
        m = re.fullmatch(r"([^\[\]]*)((?:\[\d+\])*)", part)
        if m is None:
            out.append(part)
            continue
        if m.group(1):
            out.append(m.group(1))
        out += [int(i) for i in re.findall(r"\[(\d+)\]", m.group(2))]
    return tuple(out)


def fmt_path(path):
    """("classes", 0, "share") -> "classes[0].share"."""
    s = ""
    for p in _as_tuple(path):
        if isinstance(p, int) and not isinstance(p, bool):
            s += f"[{p}]"
        else:
            s += ("." if s else "") + str(p)
    return s


# ---------------------------------------------------------------------------------------------
# reading YAML with line numbers
# ---------------------------------------------------------------------------------------------

def _key(node):
    """A mapping key as it appears in the data (YAML 1.1: `on:` is True, `1:` is 1)."""
    try:
        key = yaml.constructor.SafeConstructor().construct_object(node)
    except yaml.YAMLError:
        return node.value
    return key if isinstance(key, (str, int, float, bool)) else node.value


def _walk(node, path, lines, source, error):
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen = {}
        for k, v in node.value:
            if not isinstance(k, yaml.ScalarNode) or k.tag == "tag:yaml.org,2002:merge":
                continue
            key = _key(k)
            line = k.start_mark.line + 1
            if key in seen:
                raise error(source, fmt_path(path + (key,)),
                            f"given twice (first on line {seen[key]}); give each field once", line=line)
            seen[key] = line
            p = path + (key,)
            lines[p] = line
            _walk(v, p, lines, source, error)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, path + (i,), lines, source, error)


def parse_yaml(text, source="<string>", error=None):
    """Parse one YAML document; returns a :class:`Doc` holding the data and the line of every
    key and item.  Syntax errors and keys given twice raise ``error`` (default SchemaError)."""
    error = error or SchemaError
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e)
        if mark is not None:
            raise error(source, None, f"not valid YAML (column {mark.column + 1}): {problem}",
                        line=mark.line + 1) from None
        raise error(source, None, f"not valid YAML: {problem}") from None
    finally:
        loader.dispose()
    lines = {}
    if node is not None:
        _walk(node, (), lines, source, error)
    return Doc(source, data, lines, error)


def load_yaml(path, error=None, source=None):
    """Read and parse a YAML file; a missing or unreadable file is an ``error`` too."""
    error = error or SchemaError
    src = source or str(path)
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        raise error(src, None, "file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise error(src, None, f"cannot read: {getattr(e, 'strerror', None) or e}") from None
    return parse_yaml(text, src, error)


# ---------------------------------------------------------------------------------------------
# the document
# ---------------------------------------------------------------------------------------------

class Doc:
    """Data read from one source, with the line of each key; reads fields and reports errors."""

    def __init__(self, source, data, lines=None, error=None):
        self.source, self.data = source, data
        self.lines = lines or {}
        self.error = error or SchemaError

    # --- errors ------------------------------------------------------------------------------
    def line(self, path):
        """The line of `path`, else of its closest enclosing key (None at the top level)."""
        p = _as_tuple(path)
        while p:
            if p in self.lines:
                return self.lines[p]
            p = p[:-1]
        return None

    def err(self, path, msg, line=None):
        p = _as_tuple(path)
        return self.error(self.source, fmt_path(p) or None, msg, line=line or self.line(p))

    # --- one field at a time -----------------------------------------------------------------
    def has(self, path):
        cur = self.data
        for part in _as_tuple(path):
            if isinstance(cur, dict) and part in cur:
                cur = cur[part]
            elif isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur):
                cur = cur[part]
            else:
                return False
        return True

    def get(self, path, default=REQUIRED):
        p = _as_tuple(path)
        cur = self.data
        for i, part in enumerate(p):
            if isinstance(cur, dict) and part in cur:
                cur = cur[part]
            elif isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur):
                cur = cur[part]
            else:
                if _required(default):
                    raise self.err(p, "missing (required)", line=self.line(p[:i]) if i else None)
                return default
        return cur

    def _field(self, spec, path, default):
        p = _as_tuple(path)
        if not self.has(p):
            if _required(default):
                raise self.err(p, f"missing (required): {spec.describe()}",
                               line=self.line(p[:-1]) if len(p) > 1 else None)
            return default
        return spec.read(self, p, self.get(p))

    def int(self, path, lo, hi, default=REQUIRED, pow2=False, nullable=False):
        return self._field(Int(lo, hi, pow2=pow2, nullable=nullable), path, default)

    def num(self, path, lo, hi, default=REQUIRED, nullable=False, open_lo=False):
        return self._field(Num(lo, hi, nullable=nullable, open_lo=open_lo), path, default)

    def str(self, path, default=REQUIRED, pattern=None, what=None, nullable=False):
        return self._field(Str(pattern, what, nullable=nullable), path, default)

    def choice(self, path, options, default=REQUIRED):
        return self._field(Choice(*options), path, default)

    def bool(self, path, default=REQUIRED):
        return self._field(Bool(), path, default)

    def check_keys(self, path, allowed, noun="field"):
        """Refuse keys of the mapping at `path` that are not in `allowed`."""
        p = _as_tuple(path)
        d = self.get(p) if p else self.data
        if not isinstance(d, dict):
            raise self.err(p, f"must be a mapping of fields {', '.join(sorted(allowed))}, got {show(d)}")
        for k in d:
            if k not in allowed:
                raise self.err(p + (k,), f"unknown {noun}; allowed {noun}s are {', '.join(sorted(allowed))}")

    # --- a declarative spec ------------------------------------------------------------------
    def read(self, spec, path=()):
        """Check the data at `path` (default: the whole document) against `spec`; returns the
        checked data with defaults filled in (plain dicts, lists and scalars)."""
        p = _as_tuple(path)
        v = self.get(p) if p else self.data
        if p == () and isinstance(spec, Map) and not isinstance(v, dict):
            raise self.err((), f"the top level must be a mapping of fields ({', '.join(spec.fields)}), "
                               f"got {show(v)}", line=self.lines.get(()))
        return spec.read(self, p, v)


# ---------------------------------------------------------------------------------------------
# field types
# ---------------------------------------------------------------------------------------------

class Spec:
    """A field type.  ``default``: REQUIRED, OMIT or a value; ``nullable``: explicit null allowed
    (read as None); ``check(doc, path, value)``: an extra rule (raise ``doc.err(...)``)."""

    def __init__(self, default=REQUIRED, nullable=False, check=None, doc=""):
        self.default, self.nullable, self.check, self.doc = default, nullable, check, doc

    def describe(self):                      # what is allowed, for messages
        return "a value"

    def convert(self, doc, path, v):         # v is not None
        return v

    def read(self, doc, path, v):
        if v is None:
            if self.nullable:
                return None
            raise doc.err(path, f"must be {self.describe()}, got null")
        out = self.convert(doc, path, v)
        if self.check is not None:
            self.check(doc, path, out)
        return out


class Any(Spec):
    def describe(self):
        return "any value"


def _looks_numeric(v):
    if not isinstance(v, str):
        return False
    try:
        float(v)
        return True
    except ValueError:
        return False


def _hint(v):
    if _looks_numeric(v):
        return f" (YAML reads {v} as text: write it with a decimal point and a signed exponent, e.g. 1.0e+9)"
    return ""


class Int(Spec):
    def __init__(self, lo, hi, pow2=False, **kw):
        super().__init__(**kw)
        self.lo, self.hi, self.pow2 = lo, hi, pow2

    def describe(self):
        return f"{'a power of two' if self.pow2 else 'an integer'} in [{_n(self.lo)}, {_n(self.hi)}]"

    def convert(self, doc, path, v):
        if isinstance(v, bool) or not isinstance(v, int):
            raise doc.err(path, f"must be an integer in [{_n(self.lo)}, {_n(self.hi)}], got {show(v)}")
        if not self.lo <= v <= self.hi:
            raise doc.err(path, f"must be in [{_n(self.lo)}, {_n(self.hi)}], got {v}")
        if self.pow2 and v & (v - 1):
            raise doc.err(path, f"must be a power of two, got {v}")
        return v


class Num(Spec):
    """A finite number (int or float, kept as given) in [lo, hi], or (lo, hi] with open_lo."""

    def __init__(self, lo, hi, open_lo=False, **kw):
        super().__init__(**kw)
        self.lo, self.hi, self.open_lo = lo, hi, open_lo

    def range(self):
        return f"{'(' if self.open_lo else '['}{_n(self.lo)}, {_n(self.hi)}]"

    def describe(self):
        return f"a number in {self.range()}"

    def convert(self, doc, path, v):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise doc.err(path, f"must be a number in {self.range()}, got {show(v)}{_hint(v)}")
        if isinstance(v, float) and not math.isfinite(v):
            raise doc.err(path, f"must be a finite number in {self.range()}, got {show(v)}")
        if not (self.lo < v if self.open_lo else self.lo <= v) or not v <= self.hi:
            raise doc.err(path, f"must be in {self.range()}, got {show(v)}")
        return v


class Str(Spec):
    """Text; with `pattern`, a full match is required (`what` says it in words)."""

    def __init__(self, pattern=None, what=None, **kw):
        super().__init__(**kw)
        self.pattern, self.what = pattern, what

    def describe(self):
        return self.what or "a string"

    def convert(self, doc, path, v):
        if not isinstance(v, str):
            raise doc.err(path, f"must be {self.describe()}, got {show(v)}")
        if self.pattern is not None and not re.fullmatch(self.pattern, v):
            raise doc.err(path, f"must be {self.describe()}, got {show(v)}")
        return v


class Choice(Spec):
    def __init__(self, *options, **kw):
        super().__init__(**kw)
        self.options = options

    def describe(self):
        return f"one of {', '.join(str(o) for o in self.options)}"

    def convert(self, doc, path, v):
        if not any(type(v) is type(o) and v == o for o in self.options):
            raise doc.err(path, f"must be {self.describe()}; got {show(v)}")
        return v


class Bool(Spec):
    def describe(self):
        return "true or false"

    def convert(self, doc, path, v):
        if not isinstance(v, bool):
            raise doc.err(path, f"must be true or false, got {show(v)}")
        return v


class List(Spec):
    def __init__(self, item, min_len=0, max_len=None, **kw):
        super().__init__(**kw)
        self.item, self.min_len, self.max_len = item, min_len, max_len

    def _count(self):
        lo, hi = self.min_len, self.max_len
        if hi is None:
            return f"at least {lo} entr{'y' if lo == 1 else 'ies'}" if lo else "any number of entries"
        if lo == hi:
            return f"exactly {lo} entr{'y' if lo == 1 else 'ies'}"
        return f"{lo} to {hi} entries"

    def describe(self):
        return f"a list of {self._count()}, each {self.item.describe()}"

    def convert(self, doc, path, v):
        if not isinstance(v, list):
            raise doc.err(path, f"must be {self.describe()}, got {show(v)}")
        if len(v) < self.min_len or (self.max_len is not None and len(v) > self.max_len):
            raise doc.err(path, f"has {len(v)} entr{'y' if len(v) == 1 else 'ies'}; allowed {self._count()}")
        return [self.item.read(doc, path + (i,), x) for i, x in enumerate(v)]


class Map(Spec):
    """A mapping with fixed fields; unknown keys are refused, absent ones get their default."""

    def __init__(self, fields, **kw):
        super().__init__(**kw)
        self.fields = fields

    def describe(self):
        return f"a mapping with fields {', '.join(self.fields)}"

    def convert(self, doc, path, v):
        if not isinstance(v, dict):
            raise doc.err(path, f"must be {self.describe()}, got {show(v)}")
        for k in v:
            if k not in self.fields:
                hint = "" if isinstance(k, str) else f" (YAML reads this key as {show(k)}: quote it)"
                raise doc.err(path + (k,), f"unknown field{hint}; allowed fields are {', '.join(sorted(self.fields))}")
        out = {k: self.fields[k].read(doc, path + (k,), x) for k, x in v.items()}    # in file order
        for k, spec in self.fields.items():                                            # then the defaults
            if k in v:
                continue
            if _required(spec.default):
                raise doc.err(path + (k,), f"missing (required): {spec.describe()}",
                              line=doc.line(path) if path else None)
            elif spec.default is not OMIT:
                out[k] = spec.read(doc, path + (k,), _copy(spec.default))     # defaults get their own defaults
        return out


class Dict(Spec):
    """A mapping of names (matching `key`) to values of one type, min_len to max_len of them."""

    def __init__(self, value, key=r"[A-Za-z0-9_.-]+", key_what="a word of letters, digits, '_', '-', '.'",
                 min_len=0, max_len=None, **kw):
        super().__init__(**kw)
        self.value, self.key, self.key_what, self.min_len, self.max_len = value, key, key_what, min_len, max_len

    def describe(self):
        return f"a mapping of names to {self.value.describe()}"

    def convert(self, doc, path, v):
        if not isinstance(v, dict):
            raise doc.err(path, f"must be {self.describe()}, got {show(v)}")
        if len(v) < self.min_len or (self.max_len is not None and len(v) > self.max_len):
            hi = "" if self.max_len is None else f" and at most {self.max_len}"
            raise doc.err(path, f"has {len(v)} entries; allowed at least {self.min_len}{hi}")
        out = {}
        for k, x in v.items():
            if not isinstance(k, str) or not re.fullmatch(self.key, k):
                raise doc.err(path + (str(k),), f"the name {show(k)} must be {self.key_what}")
            out[k] = self.value.read(doc, path + (k,), x)
        return out


def _copy(v):
    if isinstance(v, dict):
        return {k: _copy(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_copy(x) for x in v]
    return v
