"""The AMI codec: whole input, byte by byte, random chunkings, bounds, repeated keys, encoder."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.agent.ami import (
    MAX_ACTION_LINE,
    MAX_ACTION_LINES,
    Banner,
    Event,
    Message,
    Parser,
    PeerClosed,
    ProtocolViolation,
    encode_action,
)
from engine.errors import (
    ConfigError,
    ManagerBadAction,
    ManagerLineTooLong,
    ManagerMessageTooLarge,
    ManagerProtocolError,
)

# What Asterisk 22.10.1 writes (main/manager.c): the banner, a login answer, a Status list with
# Variable: lines and its StatusComplete, a Getvar answer, an unsolicited event.
BANNER = b"Asterisk Call Manager/11.0.0\r\n"
LOGIN_OK = (b"Response: Success\r\nActionID: ve-1-1\r\n"
            b"Message: Authentication accepted\r\n\r\n")
STATUS = (
    b"Response: Success\r\nActionID: ve-1-2\r\nEventList: start\r\n"
    b"Message: Channel status will follow\r\n\r\n"
    b"Event: Status\r\nPrivilege: Call\r\nChannel: PJSIP/trunk-00000001\r\n"
    b"CallerIDNum: 5551234\r\nCallerIDName: Ana \xc3\x91u\xc3\xb1ez\r\nExten: s\r\n"
    b"Variable: VE_UUID=4f0c2a9e-1d3b-4c5a-9e8f-7a6b5c4d3e2f\r\nVariable: OTHER=a=b\r\n"
    b"ActionID: ve-1-2\r\n\r\n"
    b"Event: StatusComplete\r\nActionID: ve-1-2\r\nEventList: Complete\r\nListItems: 1\r\n"
    b"Items: 1\r\n\r\n"
)
GETVAR = b"Response: Success\r\nActionID: ve-1-3\r\nVariable: VE_UUID\r\nValue: \r\n\r\n"
NEWCHANNEL = (b"Event: Newchannel\r\nPrivilege: call,all\r\nChannel: PJSIP/trunk-00000002\r\n"
              b"Uniqueid: 1767225600.2\r\n\r\n")
STREAM = BANNER + LOGIN_OK + STATUS + GETVAR + NEWCHANNEL


def parse(*chunks: bytes, eof: bool = False, parser: Parser | None = None) -> list[Event]:
    parser = parser or Parser()
    for chunk in chunks:
        parser.receive_data(chunk)
    if eof:
        parser.receive_eof()
    return parser.events_received()


def messages(events: list[Event]) -> list[Message]:
    return [e for e in events if isinstance(e, Message)]


def test_whole_stream() -> None:
    events = parse(STREAM, eof=True)
    assert events[0] == Banner("11.0.0")
    assert events[-1] == PeerClosed(False)
    login, ack, status, complete, getvar, newchannel = messages(events)
    assert login.response == "Success" and login.action_id == "ve-1-1"
    assert login["message"] == "Authentication accepted"
    assert ack["EventList"] == "start" and ack.event is None
    assert status.event == "Status" and status["CallerIDName"] == "Ana Ñuñez"
    assert status.variables() == {"VE_UUID": "4f0c2a9e-1d3b-4c5a-9e8f-7a6b5c4d3e2f",
                                  "OTHER": "a=b"}
    assert complete.event == "StatusComplete" and complete["eventlist"] == "Complete"
    assert getvar["Value"] == "" and getvar["Variable"] == "VE_UUID"
    assert newchannel.event == "Newchannel" and newchannel.response is None
    assert not newchannel.is_error


def test_byte_by_byte_equals_whole() -> None:
    whole = parse(STREAM, eof=True)
    assert parse(*(STREAM[i:i + 1] for i in range(len(STREAM))), eof=True) == whole


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=40))
def test_any_chunking_equals_whole(cuts: list[int]) -> None:
    points = [0, *sorted(cuts), len(STREAM)]
    chunks = [STREAM[a:b] for a, b in zip(points, points[1:], strict=False)]
    assert parse(*chunks, eof=True) == parse(STREAM, eof=True)


def test_trailing_bytes_wait_for_the_rest() -> None:
    parser = Parser()
    cut = len(BANNER + LOGIN_OK) + 10
    events = parse(STREAM[:cut], parser=parser)
    assert events == [Banner("11.0.0"), messages(parse(BANNER + LOGIN_OK))[0]]
    rest = parse(STREAM[cut:], parser=parser)
    assert [m.event or m.response for m in messages(rest)][:1] == ["Success"]
    assert len(messages(rest)) == 5


def test_eof_inside_a_message_is_truncated() -> None:
    assert parse(BANNER + LOGIN_OK[:-2], eof=True)[-1] == PeerClosed(True)
    assert parse(BANNER + b"Response: Succ", eof=True)[-1] == PeerClosed(True)
    assert parse(b"Asterisk Call", eof=True) == [PeerClosed(True)]
    assert parse(BANNER, eof=True) == [Banner("11.0.0"), PeerClosed(False)]


def test_repeated_keys_keep_every_value_in_order() -> None:
    [message] = messages(parse(BANNER + b"Response: Success\r\nOutput: one\r\noutput:  two\r\n"
                                        b"OUTPUT: three\r\n\r\n"))
    assert message.get_all("Output") == ["one", " two", "three"]
    assert message["output"] == "one"
    assert list(message) == ["Response", "Output"] and len(message) == 2
    assert "OUTPUT" in message and "Missing" not in message and 3 not in message
    assert message.get_all("missing") == []
    with pytest.raises(KeyError):
        message["missing"]


def test_bare_lf_and_blank_lines_between_messages() -> None:
    events = parse(b"Asterisk Call Manager/12.0.0\n\r\n\nEvent: A\nKey:value\r\n\nEvent: B\r\n\r\n")
    assert events[0] == Banner("12.0.0")
    a, b = messages(events)
    assert a.fields == (("Event", "A"), ("Key", "value")) and b.event == "B"


def test_a_line_that_is_no_header_goes_to_the_body() -> None:
    [message] = messages(parse(BANNER + b"Event: Odd\r\nno colon here\r\n: no key\r\n\r\n"))
    assert message.event == "Odd" and message.body == ("no colon here", ": no key")


def test_follows_response_of_asterisk_13_command() -> None:
    data = (BANNER + b"Response: Follows\r\nPrivilege: Command\r\nActionID: ve-1-9\r\n"
            b"Channel              Location\n\nKey: not a header\n"
            b"--END COMMAND--\r\n\r\n" + NEWCHANNEL)
    events = parse(data)
    follows, newchannel = messages(events)
    assert follows.response == "Follows" and follows.action_id == "ve-1-9"
    assert follows.body == ("Channel              Location", "", "Key: not a header")
    assert "Key" not in follows
    assert newchannel.event == "Newchannel"
    assert parse(*(data[i:i + 1] for i in range(len(data)))) == events
    # Output without a final newline: the marker ends its last line.
    [last] = messages(parse(BANNER + b"Response: Follows\r\nPrivilege: Command\r\n"
                                     b"1 active call--END COMMAND--\r\n\r\n"))
    assert last.body == ("1 active call",)


def test_a_wrong_banner_is_a_violation() -> None:
    events = parse(b"HTTP/1.1 400 Bad Request\r\n\r\n" + LOGIN_OK)
    assert len(events) == 1 and isinstance(events[0], ProtocolViolation)
    assert type(events[0].error) is ManagerProtocolError
    assert "HTTP/1.1 400" in str(events[0].error)


def test_a_line_past_the_bound_is_a_violation_in_any_chunking() -> None:
    parser = Parser(max_line=100, max_message=1000)
    long_line = BANNER + b"Event: X\r\nData: " + b"x" * 200
    events = parse(long_line, parser=parser)
    assert events[-1] == ProtocolViolation(ManagerLineTooLong(100))
    assert parser.finished
    assert parse(NEWCHANNEL, eof=True, parser=parser) == []  # terminal: the rest is ignored
    # Found before the line ends, byte by byte as well.
    bytewise = Parser(max_line=100, max_message=1000)
    assert parse(*(long_line[i:i + 1] for i in range(len(long_line))),
                 parser=bytewise)[-1] == ProtocolViolation(ManagerLineTooLong(100))


def test_a_line_exactly_at_the_bound_passes_even_split_at_its_cr() -> None:
    line = b"Data: " + b"y" * 94  # 100 bytes
    data = BANNER + b"Event: X\r\n" + line + b"\r\n\r\n"
    whole = parse(data, parser=Parser(max_line=100, max_message=1000))
    assert messages(whole)[0]["Data"] == "y" * 94
    split = data.index(b"\r\n\r\n") + 1  # between the CR and the LF of the long line
    assert parse(data[:split], data[split:], parser=Parser(100, 1000)) == whole


def test_a_message_past_the_bound_is_a_violation() -> None:
    body = b"".join(b"Variable: V%d=%s\r\n" % (i, b"z" * 80) for i in range(20))
    data = BANNER + b"Event: Status\r\n" + body + b"\r\n"
    events = parse(data, parser=Parser(max_line=200, max_message=1000))
    assert events == [Banner("11.0.0"), ProtocolViolation(ManagerMessageTooLarge(1000))]
    assert parse(*(data[i:i + 1] for i in range(len(data))),
                 parser=Parser(max_line=200, max_message=1000)) == events
    # The bound is per message: many small messages are fine.
    many = BANNER + NEWCHANNEL * 200
    assert len(messages(parse(many, parser=Parser(max_line=200, max_message=1000)))) == 200


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300), st.lists(st.integers(min_value=0, max_value=400), max_size=8))
def test_random_input_never_raises_and_chunking_never_matters(junk: bytes, cuts: list[int]) -> None:
    data = BANNER + junk.replace(b"\x00", b"\n")
    points = [0, *sorted(c for c in cuts if c <= len(data)), len(data)]
    chunks = [data[a:b] for a, b in zip(points, points[1:], strict=False)]
    assert parse(*chunks, eof=True, parser=Parser(64, 128)) == parse(
        data, eof=True, parser=Parser(64, 128))


def test_bounds_are_checked() -> None:
    with pytest.raises(ConfigError):
        Parser(max_line=10)
    with pytest.raises(ConfigError):
        Parser(max_line=2000, max_message=1000)


def test_message_equality_and_hash() -> None:
    a = Message((("Event", "X"), ("A", "1")))
    assert a == Message((("Event", "X"), ("A", "1"))) and hash(a) == hash(
        Message((("Event", "X"), ("A", "1"))))
    assert a != Message((("event", "X"), ("A", "1")))
    assert a.variables("A") == {}


# --- the encoder ----------------------------------------------------------------------------


def test_encode_action_with_action_id_and_repeated_keys() -> None:
    data = encode_action("Originate", [("Channel", "PJSIP/100"), ("Variable", "A=1"),
                                       ("Variable", "B=2")], action_id="ve-7-1")
    assert data == (b"Action: Originate\r\nActionID: ve-7-1\r\nChannel: PJSIP/100\r\n"
                    b"Variable: A=1\r\nVariable: B=2\r\n\r\n")
    assert encode_action("Ping") == b"Action: Ping\r\n\r\n"
    assert encode_action("Getvar", {"Channel": "Local/1@x-0001;1", "Variable": "CALLERID(num)"}
                         ) == (b"Action: Getvar\r\nChannel: Local/1@x-0001;1\r\n"
                               b"Variable: CALLERID(num)\r\n\r\n")


def test_the_encoder_output_parses_back() -> None:
    data = encode_action("Setvar", {"Channel": "PJSIP/a-1", "Variable": "X", "Value": "ä b"},
                         action_id="ve-1-5")
    [message] = messages(parse(BANNER + data))
    assert message.fields == (("Action", "Setvar"), ("ActionID", "ve-1-5"),
                              ("Channel", "PJSIP/a-1"), ("Variable", "X"), ("Value", "ä b"))


SECRET = "hunter2-very-secret"


@pytest.mark.parametrize("fields, key", [
    ({"Secret": SECRET + "\r\nAction: Originate"}, "Secret"),
    ({"Secret": SECRET + "\n"}, "Secret"),
    ({"Secret": SECRET + "\r"}, "Secret"),
    ({"Bad:Key": SECRET}, "'Bad:Key'"),
    ({" Key": SECRET}, "' Key'"),
    ({"": SECRET}, "''"),
    ({"ActionID": SECRET}, "ActionID"),
    ({"action": SECRET}, "action"),
    ({"Secret": "x" * MAX_ACTION_LINE}, "Secret"),
])
def test_the_encoder_refuses_what_asterisk_would_misread(fields: dict[str, str],
                                                         key: str) -> None:
    with pytest.raises(ManagerBadAction) as caught:
        encode_action("Login", fields, action_id="ve-1-1")
    assert caught.value.action == "Login" and caught.value.key == key
    assert SECRET not in str(caught.value) and "xxxx" not in str(caught.value)


def test_the_encoder_refuses_a_non_string_and_too_many_lines() -> None:
    with pytest.raises(ManagerBadAction, match="not a str"):
        encode_action("Redirect", {"Priority": 1})  # type: ignore[dict-item]
    fields = [("Variable", f"V{i}=1") for i in range(MAX_ACTION_LINES)]
    with pytest.raises(ManagerBadAction, match="only the first 128"):
        encode_action("Originate", fields)
    assert encode_action("Originate", fields[:-1]).count(b"\r\n") == MAX_ACTION_LINES + 1


def test_a_line_at_the_limit_is_accepted() -> None:
    value = "v" * (MAX_ACTION_LINE - len("Data: "))
    assert f"Data: {value}".encode() in encode_action("X", {"Data": value})
