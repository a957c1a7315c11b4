"""A JSON object read as a stream: each member's value whole, or a list one item at a time.

A saved report can list hundreds of thousands of destinations; ``json.load`` would hold the
text and every object at once. This reads the file in chunks and decodes one value at a time
with the standard decoder, so memory holds one item (and one chunk) whatever the size.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import IO, Any

_CHUNK = 1 << 16
#: The largest single value read whole (a report's items are a few hundred bytes).
_MAX_VALUE = 1 << 24
_SPACE = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


class Reader:
    """Reads one JSON document from a text file, front to back.

    Errors are ``json.JSONDecodeError`` with the line and column in the whole file.
    """

    def __init__(self, file: IO[str]) -> None:
        self._file = file
        self._text = ""
        self._pos = 0
        #: Lines and characters of the file before ``_text``.
        self._lines = 0
        self._offset = 0
        self._eof = False

    def members(self) -> Iterator[str]:
        """The keys of the object that starts here; read each one's value (``value`` or
        ``items``) before asking for the next key."""
        self._take("{")
        if self.peek() == "}":
            self._pos += 1
            return
        while True:
            key = self.value()
            if not isinstance(key, str):
                raise self._error("Expecting property name enclosed in double quotes")
            self._take(":")
            yield key
            if self._separator("}"):
                return

    def items(self) -> Iterator[Any]:
        """The items of the list that starts here, one at a time."""
        self._take("[")
        if self.peek() == "]":
            self._pos += 1
            return
        while True:
            yield self.value()
            if self._separator("]"):
                return

    def value(self) -> Any:
        """The whole value that starts here."""
        self.peek()
        while True:
            try:
                value, end = _DECODER.raw_decode(self._text, self._pos)
            except json.JSONDecodeError as err:
                if self._more():
                    continue
                raise self._shifted(err) from None
            if end == len(self._text) and self._more():
                continue  # a number may go on in the next chunk
            self._pos = end
            return value

    def peek(self) -> str:
        """The next character that is not white space ("" at the end)."""
        while True:
            self._pos = _SPACE.match(self._text, self._pos).end()  # type: ignore[union-attr]
            if self._pos < len(self._text) or not self._more():
                return self._text[self._pos : self._pos + 1]

    def end(self) -> None:
        """Nothing but white space may follow the document."""
        if self.peek():
            raise self._error("Extra data")

    def _separator(self, closing: str) -> bool:
        """Past a ``,`` (False) or the closing bracket (True)."""
        char = self.peek()
        if char in (",", closing):
            self._pos += 1
            return char == closing
        raise self._error(f"Expecting ',' delimiter or {closing!r}")

    def _take(self, char: str) -> None:
        if self.peek() != char:
            raise self._error(f"Expecting {char!r}")
        self._pos += 1

    def _more(self) -> bool:
        """Reads another chunk, dropping what was read; False at the end of the file."""
        if self._eof or len(self._text) - self._pos > _MAX_VALUE:
            return False
        chunk = self._file.read(_CHUNK)
        if not chunk:
            self._eof = True
            return False
        done = self._text[: self._pos]
        self._lines += done.count("\n")
        self._offset += len(done)
        self._text = self._text[self._pos :] + chunk
        self._pos = 0
        return True

    def _error(self, message: str) -> json.JSONDecodeError:
        return self._shifted(json.JSONDecodeError(message, self._text, self._pos))

    def _shifted(self, err: json.JSONDecodeError) -> json.JSONDecodeError:
        """The error as ``json.load`` would give it: lines and columns of the whole file."""
        shifted = json.JSONDecodeError(err.msg, err.doc, err.pos)
        shifted.pos = self._offset + err.pos
        shifted.lineno = self._lines + err.lineno
        return shifted
