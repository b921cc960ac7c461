"""A scripted Asterisk manager (AMI) on loopback, speaking what Asterisk 22.10.1 writes.

Every message below is modelled on ``main/manager.c`` and ``main/manager_channels.c`` of
Asterisk 22.10.1 (tag ``22.10.1`` of asterisk/asterisk): the banner (``AMI_VERSION`` 11.0.0,
``Asterisk Call Manager/%s\\r\\n``), ``astman_send_response_full()`` (``Response``, then
``ActionID``, then ``EventList`` for a list, then ``Message``), ``action_login()``
(``Authentication accepted``; ``Authentication failed`` and then the session ends),
``generate_status()`` and ``astman_send_list_complete_start()`` for ``Status``,
``action_getvar()``, ``action_setvar()``, ``action_redirect()``,
``ast_manager_hangup_helper()``, ``action_ping()``, ``action_coreshowchannels()``, the
channel state block of ``ast_manager_build_channel_state_string_prefix()``, and the event
header of ``__manager_event_sessions_va()`` (``Event``, ``Privilege``). The parser here is
its own (a split on blank lines), so that the client's parser is not tested with itself.

Scripted behaviours, per action name: ``fail`` (``Response: Error`` with a message),
``stall`` (never answer), ``drop`` (close the connection on receipt). Also: ``refuse`` the
next connections (accept, then close before the banner), ``drop_all`` (an Asterisk restart),
``emit`` an unsolicited event, ``reverse`` the order of the next answers (concurrent actions
answered out of order), ``chunk`` (write everything in pieces of that many bytes).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

__all__ = ["AmiPeer", "Channel", "SECRET", "USER"]

USER = "voice-engine"
SECRET = "s3cr3t-AMI-pass-9f8e7d"
AMI_VERSION = "11.0.0"  # include/asterisk/manager.h of Asterisk 22.10.1


@dataclass
class Channel:
    """A live channel, as Asterisk's channel snapshot has it."""

    name: str
    uniqueid: str
    caller_num: str = ""
    caller_name: str = ""
    context: str = "voice-engine"
    exten: str = "s"
    priority: int = 2
    dnid: str = ""
    tech: str = "PJSIP"
    application: str = "AudioSocket"
    data: str = ""
    variables: dict[str, str] = field(default_factory=dict)

    def state_block(self) -> str:
        """ast_manager_build_channel_state_string_prefix() with an empty prefix."""
        return (
            f"Channel: {self.name}\r\n"
            "ChannelState: 6\r\n"
            "ChannelStateDesc: Up\r\n"
            f"CallerIDNum: {self.caller_num or '<unknown>'}\r\n"
            f"CallerIDName: {self.caller_name or '<unknown>'}\r\n"
            "ConnectedLineNum: <unknown>\r\n"
            "ConnectedLineName: <unknown>\r\n"
            "Language: en\r\n"
            "AccountCode: \r\n"
            f"Context: {self.context}\r\n"
            f"Exten: {self.exten}\r\n"
            f"Priority: {self.priority}\r\n"
            f"Uniqueid: {self.uniqueid}\r\n"
            f"Linkedid: {self.uniqueid}\r\n"
        )


def _parse(block: bytes) -> list[tuple[str, str]]:
    lines = block.decode().split("\r\n")
    return [(k, v) for k, _, v in (line.partition(": ") for line in lines if line)]


class _Session:
    def __init__(self, peer: AmiPeer, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.peer = peer
        self.reader = reader
        self.writer = writer
        self.authenticated = False
        self.events = False

    def send(self, text: str) -> None:
        data = text.encode()
        size = self.peer.chunk
        if size is None:
            self.writer.write(data)
        else:
            for i in range(0, len(data), size):
                self.writer.write(data[i:i + size])

    def close(self) -> None:
        self.writer.close()


class AmiPeer:
    """An AMI server on 127.0.0.1 with scripted users, channels and misbehaviour."""

    def __init__(self, channels: list[Channel] | None = None,
                 users: dict[str, str] | None = None) -> None:
        self.users = {USER: SECRET} if users is None else users
        self.channels = list(channels or [])
        self.actions: list[dict[str, str]] = []  # every action received, keys as sent
        self.logins = 0
        self.connections = 0
        self.redirects: list[tuple[str, str, str, str]] = []
        self.behaviour: dict[str, tuple[str, str]] = {}
        self.refusing = 0
        self.chunk: int | None = None
        self.sessions: list[_Session] = []
        self._reverse: list[tuple[_Session, str]] | None = None
        self._reverse_count = 0
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> AmiPeer:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for session in list(self.sessions):
            session.close()
        if self._handlers:
            await asyncio.wait(self._handlers)
        if self._server is not None:
            await self._server.wait_closed()

    # -- scripting -----------------------------------------------------------------------

    def fail(self, action: str, message: str) -> None:
        self.behaviour[action.lower()] = ("fail", message)

    def stall(self, action: str) -> None:
        self.behaviour[action.lower()] = ("stall", "")

    def drop_on(self, action: str) -> None:
        self.behaviour[action.lower()] = ("drop", "")

    def heal(self, action: str) -> None:
        self.behaviour.pop(action.lower(), None)

    def reverse(self, count: int) -> None:
        """Holds the answers to the next ``count`` actions, then sends them last first."""
        self._reverse = []
        self._reverse_count = count

    def drop_all(self) -> None:
        """Closes every session, as an Asterisk restart does."""
        for session in list(self.sessions):
            session.close()

    def emit(self, event: str, body: str, privilege: str = "call,all") -> None:
        """Sends an event to every logged-in session that asked for events."""
        text = f"Event: {event}\r\nPrivilege: {privilege}\r\n{body}\r\n"
        for session in self.sessions:
            if session.authenticated and session.events:
                session.send(text)

    def emit_newchannel(self, channel: Channel) -> None:
        self.emit("Newchannel", channel.state_block())

    def emit_hangup(self, channel: Channel, cause: int = 16,
                    text: str = "Normal Clearing") -> None:
        self.emit("Hangup", channel.state_block() + f"Cause: {cause}\r\nCause-txt: {text}\r\n")

    def channel(self, name: str) -> Channel | None:
        return next((c for c in self.channels if c.name == name), None)

    # -- the server ----------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.connections += 1
        session = _Session(self, reader, writer)
        try:
            if self.refusing:
                self.refusing -= 1
                return
            self.sessions.append(session)
            session.send(f"Asterisk Call Manager/{AMI_VERSION}\r\n")
            while True:
                try:
                    block = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                if not self._handle(session, dict(_parse(block[:-4]))):
                    return
                await writer.drain()
        finally:
            if session in self.sessions:
                self.sessions.remove(session)
            writer.close()
            try:
                await writer.wait_closed()
            except ConnectionError:
                pass
            self._handlers.discard(task)

    def _handle(self, session: _Session, action: dict[str, str]) -> bool:
        """Answers one action; False ends the session."""
        self.actions.append(action)
        name = action.get("Action", "")
        aid = action.get("ActionID", "")
        idline = f"ActionID: {aid}\r\n" if aid else ""
        if not name:
            session.send(f"Response: Error\r\n{idline}Message: Missing action in request\r\n\r\n")
            return True
        if name.lower() == "login":
            return self._login(session, action, idline)
        if not session.authenticated:
            session.send(f"Response: Error\r\n{idline}Message: Permission denied\r\n\r\n")
            return True
        how, message = self.behaviour.get(name.lower(), ("", ""))
        if how == "drop":
            return False
        if how == "stall":
            return True
        if how == "fail":
            self._answer(session, f"Response: Error\r\n{idline}Message: {message}\r\n\r\n")
            return True
        hung_up = self.channel(action.get("Channel", "")) if name.lower() == "hangup" else None
        self._answer(session, self._run(name, action, idline))
        if hung_up is not None:  # the Hangup event follows the answer
            self.emit_hangup(hung_up, 0, "Unknown")
        return True

    def _answer(self, session: _Session, text: str) -> None:
        if self._reverse is not None:
            self._reverse.append((session, text))
            if len(self._reverse) == self._reverse_count:
                held, self._reverse = self._reverse, None
                for target, answer in reversed(held):
                    target.send(answer)
            return
        session.send(text)

    def _login(self, session: _Session, action: dict[str, str], idline: str) -> bool:
        user, secret = action.get("Username", ""), action.get("Secret", "")
        if self.users.get(user) != secret or not user:
            # action_login() sleeps 1 s first, then returns -1: the session ends.
            session.send(f"Response: Error\r\n{idline}Message: Authentication failed\r\n\r\n")
            return False
        session.authenticated = True
        session.events = action.get("Events", "on").lower() not in ("off", "no", "false", "0")
        self.logins += 1
        # No FullyBooted event follows: Asterisk sends it only to users with read = system.
        session.send(f"Response: Success\r\n{idline}Message: Authentication accepted\r\n\r\n")
        return True

    def _run(self, name: str, action: dict[str, str], idline: str) -> str:
        ok = f"Response: Success\r\n{idline}"
        lowered = name.lower()
        if lowered == "ping":
            return f"{ok}Ping: Pong\r\nTimestamp: 1767225600.000000\r\n\r\n"
        if lowered == "status":
            return self._status(action, idline)
        if lowered == "coreshowchannels":
            return self._coreshowchannels(idline)
        channel = self.channel(action.get("Channel", ""))
        if lowered == "redirect":
            if channel is None:
                return (f"Response: Error\r\n{idline}Message: Channel does not exist: "
                        f"{action.get('Channel', '')}\r\n\r\n")
            self.redirects.append((channel.name, action.get("Context", ""),
                                   action.get("Exten", ""), action.get("Priority", "")))
            return f"{ok}Message: Redirect successful\r\n\r\n"
        if lowered in ("getvar", "setvar", "hangup") and channel is None:
            return f"Response: Error\r\n{idline}Message: No such channel\r\n\r\n"
        if lowered == "getvar":
            variable = action.get("Variable", "")
            value = channel.variables.get(variable, "") if channel else ""
            return f"{ok}Variable: {variable}\r\nValue: {value}\r\n\r\n"
        if lowered == "setvar" and channel is not None:
            channel.variables[action.get("Variable", "")] = action.get("Value", "")
            return f"{ok}Message: Variable Set\r\n\r\n"
        if lowered == "hangup" and channel is not None:
            self.channels.remove(channel)
            return f"{ok}Message: Channel Hungup\r\n\r\n"
        return (f"Response: Error\r\n{idline}Message: Invalid/unknown command: {name}. "
                "Use Action: ListCommands to show available commands.\r\n\r\n")

    def _status(self, action: dict[str, str], idline: str) -> str:
        wanted = [v for v in action.get("Variables", "").split(",") if v]
        name = action.get("Channel", "")
        channels = self.channels
        if name:
            channels = [c for c in self.channels if c.name == name]
            if not channels:
                return f"Response: Error\r\n{idline}Message: No such channel\r\n\r\n"
        parts = [f"Response: Success\r\n{idline}EventList: start\r\n"
                 "Message: Channel status will follow\r\n\r\n"]
        for c in channels:
            # A variable that is not set is a NULL char *, which glibc prints as "(null)".
            variables = "".join(f"Variable: {v}={c.variables.get(v, '(null)')}\r\n"
                                for v in wanted)
            parts.append(
                "Event: Status\r\nPrivilege: Call\r\n" + c.state_block()
                + f"Type: {c.tech}\r\nDNID: {c.dnid or '<unknown>'}\r\n"
                "EffectiveConnectedLineNum: <unknown>\r\n"
                "EffectiveConnectedLineName: <unknown>\r\n"
                "TimeToHangup: 0\r\nBridgeID: \r\n"
                f"Application: {c.application}\r\nData: {c.data}\r\n"
                "Nativeformats: (ulaw)\r\nReadformat: slin\r\n"
                "Readtrans: (ulaw@8000)->(slin@8000)\r\nWriteformat: slin\r\n"
                "Writetrans: (slin@8000)->(ulaw@8000)\r\n"
                "Callgroup: 0\r\nPickupgroup: 0\r\nSeconds: 7\r\n"
                f"{variables}{idline}\r\n")
        parts.append(f"Event: StatusComplete\r\n{idline}EventList: Complete\r\n"
                     f"ListItems: {len(channels)}\r\nItems: {len(channels)}\r\n\r\n")
        return "".join(parts)

    def _coreshowchannels(self, idline: str) -> str:
        parts = [f"Response: Success\r\n{idline}EventList: start\r\n"
                 "Message: Channels will follow\r\n\r\n"]
        for c in self.channels:
            parts.append(f"Event: CoreShowChannel\r\n{idline}" + c.state_block()
                         + f"Application: {c.application}\r\nApplicationData: {c.data}\r\n"
                         "Duration: 00:00:07\r\nBridgeId: \r\n\r\n")
        parts.append(f"Event: CoreShowChannelsComplete\r\n{idline}EventList: Complete\r\n"
                     f"ListItems: {len(self.channels)}\r\n\r\n")
        return "".join(parts)
