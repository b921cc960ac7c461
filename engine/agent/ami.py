"""The Asterisk manager (AMI) wire format, sans-I/O: a parser for what Asterisk sends, an encoder.

What Asterisk writes (``main/manager.c`` of Asterisk 22.10.1 and 23.4, the releases this
follows):

- once, on connect, the banner ``Asterisk Call Manager/<AMI version>\\r\\n`` (11.0.0 on 22,
  12.0.0 on 23);
- then messages: ``Key: Value\\r\\n`` lines ended by an empty line. A response starts with
  ``Response: Success``, ``Error`` or ``Goodbye`` and echoes the action's ``ActionID``; an
  event starts with ``Event: <name>``. List actions (``Status``, ``CoreShowChannels``) answer
  ``Response: Success`` with ``EventList: start``, then one event per item carrying the
  ActionID, then an event named ``...Complete`` with ``EventList: Complete``. Keys repeat
  (``Variable:`` lines on ``Status``, ``Output:`` on ``Command``): :class:`Message` keeps every
  line in order and reads keys case-insensitively. Up to Asterisk 13, ``Command`` answered
  ``Response: Follows`` and then the raw output up to a ``--END COMMAND--`` line: those lines
  are the message's :attr:`Message.body`.

:class:`ChannelInfo` reads a channel out of an ``Event: Status`` (or ``CoreShowChannel``).

Asterisk's own reader takes a bare ``\\n`` as a line end too, and so does this parser. Its
bounds: a line (``max_line``) and a message (``max_message``); past one, the parser reports a
terminal :class:`ProtocolViolation` carrying :class:`~engine.errors.ManagerLineTooLong` or
:class:`~engine.errors.ManagerMessageTooLarge` and ignores the rest. Nothing the peer sends
makes it raise. Bytes are decoded as UTF-8 by whole lines, so a chunk may end anywhere.

:func:`encode_action` builds an action; it refuses what Asterisk would misread: a CR or LF in
a key or value (it would start a new header: an injection), a line longer than Asterisk reads
(its input buffer holds 1024 bytes, CRLF included), more than 128 lines (Asterisk drops the
rest silently). Its errors name the key, never the value, which may be a secret.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from engine.errors import (
    ConfigError,
    ManagerBadAction,
    ManagerLineTooLong,
    ManagerMessageTooLarge,
    ManagerProtocolError,
)

__all__ = [
    "BANNER_PREFIX",
    "DEFAULT_MAX_LINE",
    "DEFAULT_MAX_MESSAGE",
    "MAX_ACTION_LINE",
    "MAX_ACTION_LINES",
    "Banner",
    "ChannelInfo",
    "Event",
    "Fields",
    "Message",
    "Parser",
    "PeerClosed",
    "ProtocolViolation",
    "encode_action",
]

BANNER_PREFIX = "Asterisk Call Manager"
#: A line longer than this without its end is a violation (Asterisk's own lines stay far below:
#: a Getvar value is cut at 1024 bytes, a Status variable at 512).
DEFAULT_MAX_LINE = 16 * 1024
#: A message longer than this is a violation (a Status event is about 1 KiB).
DEFAULT_MAX_MESSAGE = 64 * 1024
#: manager.c reads lines into a 1025-byte buffer and drops a line that fills it without CRLF.
MAX_ACTION_LINE = 1022
#: AST_MAX_MANHEADERS: Asterisk keeps the first 128 lines of an action and ignores the rest.
MAX_ACTION_LINES = 128
_END_COMMAND = "--END COMMAND--"
_UNKNOWN = "<unknown>"  # what Asterisk writes for an empty caller ID number or name
# The headers of a Follows response before its raw output (manager.c of Asterisk 13).
_FOLLOWS_HEADERS = frozenset({"response", "privilege", "actionid"})

Fields = Mapping[str, str] | Iterable[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class Banner:
    """The first line: ``version`` is the AMI version (not Asterisk's), e.g. ``11.0.0``."""

    version: str


@dataclass(frozen=True, slots=True)
class Message(Mapping[str, str]):
    """One response or event: its ``Key: Value`` lines in order, read case-insensitively.

    As a mapping, ``message[key]`` is the first value of ``key`` and iteration gives each key
    once; :meth:`get_all` gives every value of a repeated key. ``body`` holds the raw output
    lines of a ``Response: Follows``.
    """

    fields: tuple[tuple[str, str], ...]
    body: tuple[str, ...] = ()
    _index: dict[str, list[str]] = field(init=False, repr=False, compare=False)
    _keys: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index: dict[str, list[str]] = {}
        keys: dict[str, str] = {}
        for key, value in self.fields:
            folded = key.lower()
            index.setdefault(folded, []).append(value)
            keys.setdefault(folded, key)
        object.__setattr__(self, "_index", index)
        object.__setattr__(self, "_keys", keys)

    def __getitem__(self, key: str) -> str:
        return self._index[key.lower()][0]

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys.values())

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._index

    def get_all(self, key: str) -> list[str]:
        """Every value of ``key``, in order (empty if absent)."""
        return list(self._index.get(key.lower(), ()))

    @property
    def response(self) -> str | None:
        """``Success``, ``Error``, ``Follows``, ``Goodbye``; None for an event."""
        return self.get("Response")

    @property
    def event(self) -> str | None:
        """The event's name; None for a response."""
        return self.get("Event")

    @property
    def action_id(self) -> str | None:
        """The ``ActionID`` echoed from the action this answers, if any."""
        return self.get("ActionID")

    @property
    def is_error(self) -> bool:
        """True for ``Response: Error`` (``Message:`` says why)."""
        return (self.response or "").lower() == "error"

    def variables(self, key: str = "Variable") -> dict[str, str]:
        """The ``key: NAME=value`` lines as a dict (a later NAME wins); others are skipped."""
        found: dict[str, str] = {}
        for line in self._index.get(key.lower(), ()):
            name, sep, value = line.partition("=")
            if sep:
                found[name] = value
        return found


@dataclass(frozen=True, slots=True)
class ChannelInfo:
    """A live channel as ``Event: Status`` describes it.

    ``caller_id_num``/``caller_id_name`` are empty when Asterisk has none (it writes
    ``<unknown>``). ``exten`` is where the channel is in the dialplan now (``s`` once a
    sample context has sent it to ``Goto(voice-engine,s,1)``), ``dnid`` the number the caller
    dialled as the channel driver saw it; :attr:`dialled` picks the better of the two.
    """

    channel: str
    uniqueid: str
    linkedid: str
    caller_id_num: str
    caller_id_name: str
    context: str
    exten: str
    dnid: str
    state: str
    variables: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def dialled(self) -> str:
        """The dialled number: ``dnid`` if Asterisk knows it, else ``exten``."""
        return self.dnid or self.exten

    @classmethod
    def from_status(cls, event: Message) -> ChannelInfo:
        """Reads an ``Event: Status`` (or ``CoreShowChannel``) message."""

        def value(key: str) -> str:
            text = event.get(key, "")
            return "" if text == _UNKNOWN else text

        return cls(
            channel=event.get("Channel", ""),
            uniqueid=event.get("Uniqueid", ""),
            linkedid=event.get("Linkedid", ""),
            caller_id_num=value("CallerIDNum"),
            caller_id_name=value("CallerIDName"),
            context=event.get("Context", ""),
            exten=event.get("Exten", ""),
            dnid=value("DNID"),
            state=event.get("ChannelStateDesc", ""),
            variables=event.variables(),
        )


@dataclass(frozen=True, slots=True)
class ProtocolViolation:
    """The peer broke the wire format or a bound: terminal; close the connection."""

    error: ManagerProtocolError

    # Exceptions compare by identity; two violations are equal when they say the same.
    def __eq__(self, other: object) -> bool:
        if type(other) is not ProtocolViolation:
            return NotImplemented
        return type(self.error) is type(other.error) and self.error.args == other.error.args

    def __hash__(self) -> int:
        return hash((type(self.error), self.error.args))


@dataclass(frozen=True, slots=True)
class PeerClosed:
    """The peer closed its side; ``truncated`` when that cut a message (or the banner) short."""

    truncated: bool = False


Event = Banner | Message | ProtocolViolation | PeerClosed


class Parser:
    """Turns the bytes Asterisk's manager sends into events, in any chunking.

    Feed it with ``receive_data()`` and ``receive_eof()``, then drain ``events_received()``:
    first a :class:`Banner`, then :class:`Message` after message. A violation is one terminal
    :class:`ProtocolViolation`; input after it (or after the end) is ignored.
    """

    def __init__(self, max_line: int = DEFAULT_MAX_LINE,
                 max_message: int = DEFAULT_MAX_MESSAGE) -> None:
        if not 64 <= max_line <= max_message:
            raise ConfigError(f"AMI bounds must satisfy 64 <= max_line <= max_message, got "
                              f"max_line={max_line}, max_message={max_message}")
        self._max_line = max_line
        self._max_message = max_message
        self._buf = bytearray()
        self._scanned = 0  # bytes of _buf already searched for a line end
        self._banner = False
        self._fields: list[tuple[str, str]] = []
        self._body: list[str] = []
        self._size = 0
        self._follows = False  # in a Follows response: raw output until --END COMMAND--
        self._finished = False
        self._events: list[Event] = []

    @property
    def finished(self) -> bool:
        """True after a violation or the end of input."""
        return self._finished

    def events_received(self) -> list[Event]:
        """The events parsed since the last call, oldest first; the parser forgets them."""
        events, self._events = self._events, []
        return events

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Parses more bytes from the peer."""
        if self._finished:
            return
        buf = self._buf
        buf += data
        pos = 0
        while True:
            end = buf.find(b"\n", max(pos, self._scanned))
            if end < 0:
                break
            stop = end - 1 if end > pos and buf[end - 1] == 0x0D else end
            if self._over(stop - pos):
                return
            self._line(bytes(buf[pos:stop]))
            pos = end + 1
            if self._finished:
                return
        del buf[:pos]
        self._scanned = len(buf)
        # A trailing CR may be the first half of a CRLF: not counted until the next byte.
        self._over(len(buf) - (1 if buf.endswith(b"\r") else 0))

    def receive_eof(self) -> None:
        """The peer closed its side: :class:`PeerClosed` (truncated inside a message)."""
        if self._finished:
            return
        truncated = bool(self._buf or self._fields or self._body or not self._banner)
        self._finished = True
        self._buf.clear()
        self._events.append(PeerClosed(truncated))

    def _over(self, length: int) -> bool:
        """Fails on the bound that ``length`` bytes of the current line cross first."""
        line_over = length > self._max_line
        room = self._max_message - self._size if self._banner else length
        if not line_over and length <= room:
            return False
        # Judged by which bound a byte-by-byte reader would cross first, so that the verdict
        # does not depend on how the input was chunked.
        if line_over and self._max_line <= room:
            self._fail(ManagerLineTooLong(self._max_line))
        else:
            self._fail(ManagerMessageTooLarge(self._max_message))
        return True

    def _fail(self, error: ManagerProtocolError) -> None:
        self._finished = True
        self._buf.clear()
        self._events.append(ProtocolViolation(error))

    def _line(self, raw: bytes) -> None:
        text = raw.decode("utf-8", "replace")
        if not self._banner:
            self._read_banner(text)
            return
        self._size += len(raw)
        if self._follows:
            self._follows_line(text)
        elif text:
            self._header_line(text)
        elif self._fields or self._body:
            self._emit()
        # else: a blank line between messages

    def _header_line(self, text: str) -> None:
        key, sep, value = text.partition(":")
        key = key.strip()
        if not sep or not key:
            self._body.append(text)  # not a header; Asterisk 14+ never sends one
            return
        self._fields.append((key, value[1:] if value.startswith(" ") else value))
        if len(self._fields) == 1 and key.lower() == "response":
            self._follows = self._fields[0][1].strip().lower() == "follows"

    def _follows_line(self, text: str) -> None:
        if text.endswith(_END_COMMAND):
            if len(text) > len(_END_COMMAND):  # output that did not end with a newline
                self._body.append(text[: -len(_END_COMMAND)])
            self._emit()
            return
        key, sep, value = text.partition(":")
        if not self._body and sep and key.strip().lower() in _FOLLOWS_HEADERS:
            self._fields.append((key.strip(), value[1:] if value.startswith(" ") else value))
        else:
            self._body.append(text)

    def _read_banner(self, text: str) -> None:
        name, _, version = text.rpartition("/")
        if not name.startswith(BANNER_PREFIX):
            self._fail(ManagerProtocolError(
                f"expected the banner '{BANNER_PREFIX}/<version>', got {text[:60]!r}"))
            return
        self._banner = True
        self._events.append(Banner(version.strip()))

    def _emit(self) -> None:
        self._events.append(Message(tuple(self._fields), tuple(self._body)))
        self._fields = []
        self._body = []
        self._size = 0
        self._follows = False


def _items(fields: Fields) -> Iterable[tuple[str, str]]:
    return fields.items() if isinstance(fields, Mapping) else fields


def encode_action(action: str, fields: Fields = (), *, action_id: str | None = None) -> bytes:
    """The bytes of one action: ``Action``, then ``ActionID`` if given, then ``fields``.

    ``fields`` is a mapping or ``(key, value)`` pairs; give a key several times (pairs) for a
    repeated header such as ``Variable``.

    Raises:
        ManagerBadAction: a key or value AMI cannot carry; the message names the key only.
    """
    lines = [_line(action, "Action", action)]
    if action_id is not None:
        lines.append(_line(action, "ActionID", action_id))
    for key, value in _items(fields):
        if key.lower() in ("action", "actionid"):
            raise ManagerBadAction(action, key, "the encoder writes Action and ActionID itself")
        lines.append(_line(action, key, value))
    if len(lines) > MAX_ACTION_LINES:
        raise ManagerBadAction(action, "", f"{len(lines)} lines; Asterisk reads only the first "
                                           f"{MAX_ACTION_LINES}")
    lines.append(b"")
    return b"\r\n".join(lines) + b"\r\n"


def _line(action: str, key: str, value: object) -> bytes:
    if not isinstance(value, str):
        raise ManagerBadAction(action, key, f"the value is a {type(value).__name__}, not a str")
    if not key or key != key.strip() or any(c in key for c in ":\r\n"):
        raise ManagerBadAction(action, repr(key),
                               "a key must be non-empty, without ':', CR, LF or outer spaces")
    if "\r" in value or "\n" in value:
        raise ManagerBadAction(action, key, "the value holds a CR or LF, which would end the "
                                            "header early")
    line = f"{key}: {value}".encode()
    if len(line) > MAX_ACTION_LINE:
        raise ManagerBadAction(action, key, f"the line is {len(line)} bytes; Asterisk reads at "
                                            f"most {MAX_ACTION_LINE}")
    return line
