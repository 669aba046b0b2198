"""One-line mutations of a block-style YAML file, for the config-loader tests: every `key: value`
line gets its value replaced by each of a few kinds of wrong value."""

import re

#: The kinds of one-line mutation: text, a negative, zero, an empty list / mapping, null, a number
#: YAML reads as text (1e30), a huge number, NaN, a boolean.
KINDS = ("banana", "-1", "0", "[]", "{}", "null", "1e30", "1.0e+30", ".nan", "true")

_LINE = re.compile(r"^(?P<indent>\s*)(?P<key>[A-Za-z_][A-Za-z_0-9]*):(?:\s+(?P<value>[^#\s][^#]*?))?\s*(?:#.*)?$")


def value_lines(text):
    """[(line number, dotted field path, value text)] for every `key: value` line of block mappings."""
    out, stack = [], []
    for n, line in enumerate(text.splitlines(), 1):
        m = _LINE.match(line)
        if not m:
            continue
        ind = len(m.group("indent"))
        while stack and stack[-1][0] >= ind:
            stack.pop()
        path = ".".join([k for _, k in stack] + [m.group("key")])
        if m.group("value") is None:
            stack.append((ind, m.group("key")))
        else:
            out.append((n, path, m.group("value")))
    return out


def mutate(text, line_no, new_value):
    """`text` with the value on line `line_no` replaced (the comment dropped)."""
    lines = text.splitlines()
    m = _LINE.match(lines[line_no - 1])
    lines[line_no - 1] = f"{m.group('indent')}{m.group('key')}: {new_value}"
    return "\n".join(lines) + "\n"


def mutations(text, kinds=KINDS):
    """[(line number, field path, kind, mutated text)] for every value line and kind that changes it."""
    return [(n, path, k, mutate(text, n, k)) for n, path, v in value_lines(text) for k in kinds if k != v]
