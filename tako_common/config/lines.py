"""Map TOML key paths to the line they are written on, for error messages.

``KeyLines.build(text)`` scans the raw text of an already *valid* TOML document (tomllib
parsed it first) and records, for every key it meets, the 1-based line of that key:

- ``[a.b]`` table headers and ``[[a.b]]`` array-of-tables headers (each element gets its
  index: ``("build_stages", 1)``), including nested arrays of tables;
- ``key = value`` and dotted ``a.b = value`` keys, relative to the current table;
- keys inside inline tables ``{ a = 1, b = { c = 2 } }`` and items of arrays
  (``("routes", 1)``), on the line where each appears.

``KeyLines.line_of(path)`` answers the line of the longest recorded prefix of ``path``,
so a problem inside a value falls back to its key, then to its table header. The scanner
is pure (text in, index out) and never raises on valid TOML.
"""

from __future__ import annotations

from dataclasses import dataclass, field

KeyPath = tuple[str | int, ...]

_BARE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


@dataclass
class KeyLines:
    """Key path -> 1-based line number."""

    lines: dict[KeyPath, int] = field(default_factory=dict)

    @classmethod
    def build(cls, text: str) -> KeyLines:
        scanner = _Scanner(text)
        scanner.run()
        return cls(scanner.lines)

    def line_of(self, path: KeyPath) -> int | None:
        """Line of ``path`` or of its longest recorded prefix; ``None`` if nothing matches."""
        for end in range(len(path), 0, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return None


class _Scanner:
    """A small cursor over valid TOML text; records key positions as it goes."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.line = 1
        self.lines: dict[KeyPath, int] = {}
        self.table: KeyPath = ()
        self.aot_counts: dict[KeyPath, int] = {}

    # -- low-level cursor -------------------------------------------------
    def peek(self, offset: int = 0) -> str:
        index = self.pos + offset
        return self.text[index] if index < len(self.text) else ""

    def advance(self, count: int = 1) -> None:
        for _ in range(count):
            if self.pos < len(self.text):
                if self.text[self.pos] == "\n":
                    self.line += 1
                self.pos += 1

    def skip_space(self, newlines: bool) -> None:
        """Skip blanks (and newlines and comments when ``newlines``)."""
        while self.pos < len(self.text):
            char = self.peek()
            if char in " \t\r" or (newlines and char == "\n"):
                self.advance()
            elif char == "#":
                while self.pos < len(self.text) and self.peek() != "\n":
                    self.advance()
            else:
                return

    def record(self, path: KeyPath, line: int) -> None:
        self.lines.setdefault(path, line)

    # -- statements -------------------------------------------------------
    def run(self) -> None:
        while True:
            self.skip_space(newlines=True)
            if self.pos >= len(self.text):
                return
            if self.peek() == "[":
                self.header()
            else:
                self.key_value(self.table)

    def header(self) -> None:
        line = self.line
        is_array = self.peek(1) == "["
        self.advance(2 if is_array else 1)
        keys = self.key_parts()
        self.advance(2 if is_array else 1)
        path = self.indexed(keys, is_array)
        self.table = path
        for end in range(1, len(path) + 1):
            self.record(path[:end], line)

    def indexed(self, keys: list[str], is_array: bool) -> KeyPath:
        """Turn header keys into a path carrying the current index of each array of tables."""
        path: KeyPath = ()
        for position, key in enumerate(keys):
            path = (*path, key)
            last = position == len(keys) - 1
            if last and is_array:
                count = self.aot_counts.get(path, 0)
                self.aot_counts[path] = count + 1
                path = (*path, count)
            elif path in self.aot_counts:
                path = (*path, self.aot_counts[path] - 1)
        return path

    def key_value(self, base: KeyPath) -> None:
        line = self.line
        keys = self.key_parts()
        self.advance()  # '='
        path = (*base, *keys)
        for end in range(len(base) + 1, len(path) + 1):
            self.record(path[:end], line)
        self.skip_space(newlines=False)
        self.value(path)

    def key_parts(self) -> list[str]:
        """Read a (dotted) key; the cursor stops on the '=' or ']' that follows it."""
        parts: list[str] = []
        while True:
            self.skip_space(newlines=False)
            char = self.peek()
            if char in ('"', "'"):
                parts.append(self.quoted_key(char))
            else:
                start = self.pos
                while self.peek() and self.peek() in _BARE:
                    self.advance()
                parts.append(self.text[start:self.pos])
            self.skip_space(newlines=False)
            if self.peek() != ".":
                break
            self.advance()
        return parts

    def quoted_key(self, quote: str) -> str:
        self.advance()
        out: list[str] = []
        while self.pos < len(self.text) and self.peek() != quote:
            if quote == '"' and self.peek() == "\\":
                out.append(self.escape())
            else:
                out.append(self.peek())
                self.advance()
        self.advance()
        return "".join(out)

    def escape(self) -> str:
        simple = {"b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r", '"': '"', "\\": "\\"}
        code = self.peek(1)
        if code in simple:
            self.advance(2)
            return simple[code]
        width = {"u": 4, "U": 8}.get(code)
        if width is not None:
            digits = self.text[self.pos + 2:self.pos + 2 + width]
            self.advance(2 + width)
            return chr(int(digits, 16))
        self.advance(2)
        return code

    # -- values -----------------------------------------------------------
    def value(self, path: KeyPath) -> None:
        char = self.peek()
        if char == "{":
            self.inline_table(path)
        elif char == "[":
            self.array(path)
        elif char in ('"', "'"):
            self.string(char)
        else:
            while self.pos < len(self.text) and self.peek() not in ",]}#\n":
                self.advance()

    def string(self, quote: str) -> None:
        if self.text.startswith(quote * 3, self.pos):
            self.advance(3)
            while self.pos < len(self.text):
                if quote == '"' and self.peek() == "\\":
                    self.advance(2)
                elif self.text.startswith(quote * 3, self.pos):
                    self.advance(3)
                    while self.peek() == quote:  # up to two quotes may close the content
                        self.advance()
                    return
                else:
                    self.advance()
            return
        self.advance()
        while self.pos < len(self.text) and self.peek() != quote:
            self.advance(2 if quote == '"' and self.peek() == "\\" else 1)
        self.advance()

    def inline_table(self, path: KeyPath) -> None:
        self.advance()  # '{'
        while True:
            self.skip_space(newlines=True)
            if self.peek() in ("}", ""):
                self.advance()
                return
            if self.peek() == ",":
                self.advance()
                continue
            self.key_value(path)

    def array(self, path: KeyPath) -> None:
        self.advance()  # '['
        index = 0
        while True:
            self.skip_space(newlines=True)
            if self.peek() in ("]", ""):
                self.advance()
                return
            if self.peek() == ",":
                self.advance()
                index += 1
                continue
            self.record((*path, index), self.line)
            self.value((*path, index))
