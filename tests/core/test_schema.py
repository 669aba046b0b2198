"""tinylpu.schema: YAML with line numbers, the field readers, and messages naming file, line and field."""

import pytest

from tinylpu.config import ConfigError
from tinylpu.schema import (
    OMIT,
    Bool,
    Choice,
    Dict,
    Doc,
    Int,
    List,
    Map,
    Num,
    SchemaError,
    Str,
    fmt_path,
    load_yaml,
    parse_yaml,
    show,
)

TEXT = """\
# a comment
name: demo
sizes:
  lanes: 16
  depth: 512
items:
  - {a: 1}
  - {a: 2, b: x}
flags: [1, 2,
        3]
"""


def doc(text=TEXT, src="f.yaml"):
    return parse_yaml(text, src)


def err(spec, text, src="f.yaml", path=()):
    with pytest.raises(SchemaError) as ei:
        doc(text, src).read(spec, path)
    return ei.value


# --- reading with lines ----------------------------------------------------------------------------

def test_lines_of_keys_and_items():
    d = doc()
    assert d.data["sizes"] == {"lanes": 16, "depth": 512}
    assert d.line("name") == 2 and d.line("sizes") == 3 and d.line("sizes.lanes") == 4 and d.line("sizes.depth") == 5
    assert d.line(("items", 1)) == 8 and d.line(("items", 1, "b")) == 8 and d.line("items[0].a") == 7
    assert d.line(("flags", 2)) == 10
    assert d.line("sizes.nothing") == 3                 # an absent key: its mapping's line
    assert d.line("nothing") is None


def test_syntax_errors_and_duplicates_name_the_line():
    with pytest.raises(SchemaError, match=r"^f.yaml:2: not valid YAML \(column \d+\): ") as ei:
        doc("a: 1\nb: x: 2\n")
    assert ei.value.line == 2 and ei.value.field is None
    with pytest.raises(SchemaError, match=r"^f.yaml:3: field 's.a': given twice \(first on line 2\)"):
        doc("s:\n  a: 1\n  a: 2\n")
    assert doc("").data is None


def test_load_yaml_missing_file(tmp_path):
    with pytest.raises(SchemaError, match=r"nope.yaml: file not found$"):
        load_yaml(tmp_path / "nope.yaml")
    p = tmp_path / "ok.yaml"
    p.write_text("a: 1\n")
    assert load_yaml(p).data == {"a": 1} and load_yaml(p).source == str(p)


def test_error_class_and_message_layout():
    e = SchemaError("f.yaml", "a.b", "must be X, got Y", line=4)
    assert str(e) == "f.yaml:4: field 'a.b': must be X, got Y" and isinstance(e, ValueError)
    assert (e.source, e.field, e.line, e.message) == ("f.yaml", "a.b", 4, "must be X, got Y")
    assert str(SchemaError("f.yaml", "a", "m")) == "f.yaml: field 'a': m"
    assert str(SchemaError("f.yaml", None, "file not found")) == "f.yaml: file not found"
    assert str(SchemaError("just a message")) == "just a message"

    class Late(SchemaError):
        line_after_field = True
    assert str(Late("f.yaml", "a.b", "bad", line=3)) == "f.yaml: field 'a.b' (line 3): bad"
    assert issubclass(ConfigError, SchemaError)
    assert str(ConfigError("x.yaml", "lanes", "bad", line=2)) == "x.yaml:2: field 'lanes': bad"


def test_show_and_paths():
    assert [show(v) for v in (None, True, "x", 1e30, float("nan"), float("-inf"), [1, 2], {})] == \
        ["null", "true", "'x'", "1e+30", ".nan", "-.inf", "[1, 2]", "{}"]
    assert fmt_path(("classes", 0, "share")) == "classes[0].share" and fmt_path("a.b") == "a.b"
    assert fmt_path((0, "chip")) == "[0].chip"


# --- readers -------------------------------------------------------------------------------------

@pytest.mark.parametrize("value, msg", [
    ("sixteen", "must be an integer in [4, 512], got 'sixteen'"),
    ("true", "must be an integer in [4, 512], got true"),            # a bool is not an int
    ("16.0", "must be an integer in [4, 512], got 16"),
    ("2", "must be in [4, 512], got 2"),
    ("1024", "must be in [4, 512], got 1024"),
    ("12", "must be a power of two, got 12"),
    ("null", "must be a power of two in [4, 512], got null"),
    ("[]", "got []"),
])
def test_int(value, msg):
    e = err(Map({"lanes": Int(4, 512, pow2=True)}), f"lanes: {value}\n")
    assert str(e) == f"f.yaml:1: field 'lanes': {msg}" or msg in str(e)
    assert e.line == 1 and e.field == "lanes"


def test_int_nullable_default_and_bounds():
    spec = Map({"n": Int(1, 8, nullable=True, default=None), "m": Int(0, 3, default=2)})
    assert doc("n: null\n").read(spec) == {"n": None, "m": 2}
    assert doc("m: 0\n").read(spec) == {"m": 0, "n": None}
    assert doc("n: 8\nm: 3\n").read(spec) == {"n": 8, "m": 3}


@pytest.mark.parametrize("value, msg", [
    (".nan", "must be a finite number in (0, 100], got .nan"),
    (".inf", "must be a finite number in (0, 100], got .inf"),
    ("1.0e+30", "must be in (0, 100], got 1e+30"),
    ("1e30", "must be a number in (0, 100], got '1e30' (YAML reads 1e30 as text"),
    ("0", "must be in (0, 100], got 0"),
    ("false", "must be a number in (0, 100], got false"),
    ("banana", "must be a number in (0, 100], got 'banana'"),
    ("null", "must be a number in (0, 100], got null"),
])
def test_num(value, msg):
    e = err(Map({"a": Int(0, 9), "x": Num(0, 100, open_lo=True)}), f"a: 1\nx: {value}\n")
    assert str(e).startswith(f"f.yaml:2: field 'x': {msg}")


def test_num_keeps_ints_and_floats():
    d = doc("i: 3\nf: 2.5\n").read(Map({"i": Num(0, 10), "f": Num(0, 10)}))
    assert d == {"i": 3, "f": 2.5} and type(d["i"]) is int


def test_str_choice_bool():
    spec = Map({"name": Str(r"[a-z]+", "a lowercase word"), "topo": Choice("full", "ring", default="full"),
                "flag": Bool(default=True)})
    assert doc("name: abc\n").read(spec) == {"name": "abc", "topo": "full", "flag": True}
    assert str(err(spec, "name: Abc\n")) == "f.yaml:1: field 'name': must be a lowercase word, got 'Abc'"
    assert str(err(spec, "name: 12\n")) == "f.yaml:1: field 'name': must be a lowercase word, got 12"
    assert str(err(spec, "name: a\ntopo: star\n")) == "f.yaml:2: field 'topo': must be one of full, ring; got 'star'"
    assert str(err(spec, "name: a\nflag: 1\n")) == "f.yaml:2: field 'flag': must be true or false, got 1"
    e = err(spec, "name: a\non: 1\n")                  # YAML 1.1: the key `on` is the boolean true
    assert str(e).startswith("f.yaml:2: field 'True': unknown field (YAML reads this key as true: quote it)")
    assert Choice(1, 2).read(Doc("s", None), (), 1) == 1
    with pytest.raises(SchemaError):
        Choice(1, 2).read(Doc("s", None), ("v",), True)          # True == 1, but a bool is not the int 1


def test_lists():
    spec = Map({"xs": List(Int(0, 9), 1, 3), "pair": List(Num(0, 1), 2, 2, default=[0, 1])})
    assert doc("xs: [1, 2]\n").read(spec) == {"xs": [1, 2], "pair": [0, 1]}
    assert str(err(spec, "xs: []\n")) == "f.yaml:1: field 'xs': has 0 entries; allowed 1 to 3 entries"
    assert str(err(spec, "xs: [1]\npair: [0.5]\n")) == "f.yaml:2: field 'pair': has 1 entry; allowed exactly 2 entries"
    assert str(err(spec, "xs:\n  - 1\n  - 10\n")) == "f.yaml:3: field 'xs[1]': must be in [0, 9], got 10"
    assert "must be a list of 1 to 3 entries, each an integer in [0, 9], got 3" in str(err(spec, "xs: 3\n"))


def test_maps_unknown_missing_defaults():
    spec = Map({"a": Int(0, 9), "sub": Map({"x": Int(0, 9), "y": Str(default=OMIT)}), "c": Int(0, 9, default=OMIT)})
    assert doc("sub: {x: 1}\na: 1\n").read(spec) == {"sub": {"x": 1}, "a": 1}          # file order, no c
    e = err(spec, "a: 1\nsub:\n  x: 1\n  z: 2\n")
    assert str(e) == "f.yaml:4: field 'sub.z': unknown field; allowed fields are x, y"
    e = err(spec, "a: 1\nsub:\n  y: hi\n")
    assert str(e) == "f.yaml:2: field 'sub.x': missing (required): an integer in [0, 9]"   # the line of its mapping
    e = err(spec, "sub: {x: 1}\n")
    assert str(e) == "f.yaml: field 'a': missing (required): an integer in [0, 9]" and e.line is None
    assert str(err(spec, "- 1\n")).startswith("f.yaml:1: the top level must be a mapping of fields (a, sub, c)")
    assert "must be a mapping with fields x, y, got [1]" in str(err(spec, "a: 1\nsub: [1]\n"))
    # an absent section with a default gets the defaults of its own fields
    spec = Map({"sub": Map({"x": Int(0, 9, default=4), "y": Str(default=OMIT)}, default={})})
    assert doc("{}\n").read(spec) == {"sub": {"x": 4}}


def test_dicts_and_checks():
    def positive_total(d, path, v):
        if sum(v.values()) <= 0:
            raise d.err(path, "the total must be positive")
    spec = Map({"w": Dict(Num(0, 1), key=r"[a-z]+", key_what="a lowercase word", min_len=1, check=positive_total)})
    assert doc("w: {a: 0.5, b: 0}\n").read(spec) == {"w": {"a": 0.5, "b": 0}}
    assert str(err(spec, "w: {a: 0}\n")) == "f.yaml:1: field 'w': the total must be positive"
    assert str(err(spec, "w:\n  a: 1\n  B: 1\n")) == "f.yaml:3: field 'w.B': the name 'B' must be a lowercase word"
    assert str(err(spec, "w: {}\n")) == "f.yaml:1: field 'w': has 0 entries; allowed at least 1"


def test_field_at_a_time_api():
    d = doc()
    assert d.get("sizes.lanes") == 16 and d.get("sizes.nope", 7) == 7 and d.has("items[1].b")
    assert d.int("sizes.depth", 2, 4096, pow2=True) == 512
    assert d.int("sizes.extra", 0, 9, default=3) == 3
    assert d.num("sizes.lanes", 0, 100) == 16 and d.str("name") == "demo"
    with pytest.raises(SchemaError, match=r"^f.yaml:5: field 'sizes.depth': must be in \[1, 100\], got 512$"):
        d.int("sizes.depth", 1, 100)
    with pytest.raises(SchemaError, match=r"^f.yaml:3: field 'sizes.width': missing \(required\)"):
        d.int("sizes.width", 1, 100)
    with pytest.raises(SchemaError, match=r"^f.yaml:2: field 'name': must be one of a, b; got 'demo'$"):
        d.choice("name", ("a", "b"))
    with pytest.raises(SchemaError, match=r"^f.yaml:4: field 'sizes.lanes': unknown key; allowed keys are depth$"):
        d.check_keys("sizes", {"depth"}, noun="key")
    with pytest.raises(SchemaError, match=r"^f.yaml:2: field 'name': custom$"):
        raise d.err("name", "custom")


def test_plain_data_without_lines():
    d = Doc("<overrides>", {"a": -1})
    with pytest.raises(SchemaError, match=r"^<overrides>: field 'a': must be in \[0, 9\], got -1$"):
        d.read(Map({"a": Int(0, 9)}))


# --- the chip-config loader on top of it ------------------------------------------------------------

def test_chip_config_mutations_name_file_line_and_field():
    """Every one-line mutation of tray.yaml is refused at its own line and field, or is a valid config."""
    from importlib import resources

    from tests.yaml_mutations import mutations
    from tinylpu.config import parse_config
    text = resources.files("tinylpu.configs").joinpath("tray.yaml").read_text()
    ok = {("name", "banana"), ("name", "1e30"), ("description", "banana"), ("description", "1e30"),
          ("clock.ppm", "-1"), ("clock.ppm", "0"), ("c2c.link_slack", "0")}
    elsewhere = {("c2c.ports", "0"): "tray.yaml:6: field 'floorplan': has a c2c slice but c2c.ports is 0"}
    bad = []
    for line, field, kind, t in mutations(text):
        try:
            parse_config(t, "tray.yaml")
        except ConfigError as e:
            want = elsewhere.get((field, kind), f"tray.yaml:{line}: field '{field}")
            if not str(e).startswith(want):
                bad.append(str(e))
            continue
        if (field, kind) not in ok:
            bad.append(f"{field} = {kind}: accepted")
    assert bad == []
