"""An example HTTP backend for the receptionist (``examples/receptionist.toml``), on loopback.

A small aiohttp.web service with real state, so that the agent's ``http`` tools are tested
against real requests and real answers, nothing hard-coded:

- ``GET /customers/{phone}``: the patient with that number (name, phone, upcoming
  appointments), or 404;
- ``GET /availability?date=YYYY-MM-DD``: the free slots of that date (the opening hours'
  slots minus those booked; none at weekends), 400 for a missing or bad date;
- ``POST /appointments``: books a slot from a JSON body (``name``, ``phone``, ``date``,
  ``time``, optional ``reason``), 201; 400 with every problem for a bad body, 409 if the slot
  is taken (or not a slot at all: 422);
- ``POST /sms``: records a message (``to``, ``message``), 202.

Every route wants ``Authorization: Bearer <key>`` (401 otherwise). Every request is recorded
in :attr:`Backend.requests` before anything else (authorised or not) for tests to assert on.
:attr:`Backend.delays` holds a per-route delay in seconds (``"customers"``,
``"availability"``, ``"appointments"``, ``"sms"``): a slow backend, for the "still working"
path of a tool that outlives its timeout.

    backend = await Backend().start()
    env = {"BACKEND_API_URL": backend.url, "BACKEND_API_KEY": backend.key}
    ...
    await backend.stop()
"""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

__all__ = ["API_KEY", "CUSTOMERS", "SLOTS", "Backend", "Seen"]

API_KEY = "bk-test-3c9d1e7f5a"
SLOTS = ("09:00", "09:30", "10:00", "10:30", "11:00", "11:30",
         "14:00", "14:30", "15:00", "15:30", "16:00", "16:30")
CUSTOMERS = {
    "+15551234": {"name": "Ana Núñez", "phone": "+15551234", "patient_id": "P-1042"},
    "+15559876": {"name": "Ben Okafor", "phone": "+15559876", "patient_id": "P-2077"},
}
_BOOKING_KEYS = {"name", "phone", "date", "time", "reason"}
_MAX_SMS = 320


@dataclass(frozen=True, slots=True)
class Seen:
    """One request as it arrived."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    route: str

    @property
    def json(self) -> Any:
        return orjson.loads(self.body) if self.body else None


@dataclass(slots=True)
class Booking:
    id: str
    name: str
    phone: str
    date: str
    time: str
    reason: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"id": self.id, "name": self.name, "phone": self.phone, "date": self.date,
                "time": self.time, "reason": self.reason}


@dataclass(slots=True)
class Sms:
    id: str
    to: str
    message: str


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(eq=False)
class Backend:
    """The receptionist's backend on ``127.0.0.1`` and a port of the system's choosing."""

    key: str = field(default=API_KEY, repr=False)
    customers: dict[str, dict[str, str]] = field(
        default_factory=lambda: {k: dict(v) for k, v in CUSTOMERS.items()})
    slots: tuple[str, ...] = SLOTS
    delays: dict[str, float] = field(default_factory=dict)
    requests: list[Seen] = field(default_factory=list)
    bookings: list[Booking] = field(default_factory=list)
    messages: list[Sms] = field(default_factory=list)
    _runner: web.AppRunner | None = field(default=None, repr=False)
    _port: int = 0

    @property
    def url(self) -> str:
        """``BACKEND_API_URL`` for the agent file."""
        return f"http://127.0.0.1:{self._port}"

    def seen(self, route: str) -> list[Seen]:
        """The requests that reached ``route``."""
        return [r for r in self.requests if r.route == route]

    async def start(self) -> Backend:
        app = web.Application(middlewares=[self._record])
        app.router.add_get("/customers/{phone}", self._customer, name="customers")
        app.router.add_get("/availability", self._availability, name="availability")
        app.router.add_post("/appointments", self._book, name="appointments")
        app.router.add_post("/sms", self._sms, name="sms")
        # A short shutdown: a test that ends while a slow request sleeps must not wait it out.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- every request -----------------------------------------------------------------

    @web.middleware
    async def _record(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        body = await request.read()
        resource = request.match_info.route.name or "(no route)"
        self.requests.append(Seen(request.method, request.path, dict(request.query),
                                  dict(request.headers), body, resource))
        delay = self.delays.get(resource, 0.0)
        if delay:
            await asyncio.sleep(delay)
        given = request.headers.get("Authorization", "")
        token = given[7:] if given[:7].lower() == "bearer " else ""
        if not secrets.compare_digest(token.encode(), self.key.encode()):
            return _error(401, "unauthorized", "a valid bearer token is required")
        return await handler(request)

    # -- routes --------------------------------------------------------------------------

    async def _customer(self, request: web.Request) -> web.Response:
        phone = request.match_info["phone"]
        customer = self.customers.get(phone)
        if customer is None:
            return _error(404, "not_found", f"no patient has the number {phone}")
        upcoming = [b.as_dict() for b in self.bookings if b.phone == phone]
        return web.json_response({**customer, "appointments": upcoming})

    async def _availability(self, request: web.Request) -> web.Response:
        day = _date(request.query.get("date", ""))
        if day is None:
            return _error(400, "bad_date", "date must be YYYY-MM-DD")
        return web.json_response({"date": day.isoformat(), "free": self._free(day)})

    def _free(self, day: dt.date) -> list[str]:
        if day.weekday() >= 5:
            return []
        taken = {b.time for b in self.bookings if b.date == day.isoformat()}
        return [slot for slot in self.slots if slot not in taken]

    async def _book(self, request: web.Request) -> web.Response:
        doc, problems = _json_object(await request.read())
        if doc is not None:
            problems += [f"unknown field {k}" for k in sorted(set(doc) - _BOOKING_KEYS)]
            for key in ("name", "phone", "date", "time"):
                value = doc.get(key)
                if not isinstance(value, str) or not value.strip():
                    problems.append(f"{key} is required (a non-empty string)")
            if "reason" in doc and not isinstance(doc["reason"], str):
                problems.append("reason must be a string")
        if problems or doc is None:
            return _error(400, "invalid_body", "; ".join(problems))
        day = _date(doc["date"])
        if day is None:
            return _error(400, "invalid_body", "date must be YYYY-MM-DD")
        if doc["time"] not in self.slots or day.weekday() >= 5:
            return _error(422, "not_a_slot", f"{doc['date']} {doc['time']} is not an "
                          "appointment slot")
        if doc["time"] not in self._free(day):
            return _error(409, "slot_taken", f"{doc['date']} {doc['time']} is already booked")
        booking = Booking(f"A-{len(self.bookings) + 1:04d}", doc["name"], doc["phone"],
                          day.isoformat(), doc["time"], doc.get("reason", ""))
        self.bookings.append(booking)
        return web.json_response({"booked": True, **booking.as_dict()}, status=201)

    async def _sms(self, request: web.Request) -> web.Response:
        doc, problems = _json_object(await request.read())
        if doc is not None:
            for key in ("to", "message"):
                if not isinstance(doc.get(key), str) or not doc[key].strip():
                    problems.append(f"{key} is required (a non-empty string)")
            if isinstance(doc.get("message"), str) and len(doc["message"]) > _MAX_SMS:
                problems.append(f"message is longer than {_MAX_SMS} characters")
        if problems or doc is None:
            return _error(400, "invalid_body", "; ".join(problems))
        sms = Sms(f"S-{len(self.messages) + 1:04d}", doc["to"], doc["message"])
        self.messages.append(sms)
        return web.json_response({"id": sms.id, "to": sms.to, "status": "queued"}, status=202)


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status)


def _date(text: str) -> dt.date | None:
    try:
        return dt.date.fromisoformat(text) if len(text) == 10 else None
    except ValueError:
        return None


def _json_object(body: bytes) -> tuple[dict[str, Any] | None, list[str]]:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, ["the body is not JSON"]
    if not isinstance(doc, dict):
        return None, ["the body must be a JSON object"]
    return doc, []
