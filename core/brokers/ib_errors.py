"""Operator-readable texts for IB's connection failures and message codes.

IB's own texts say what happened, rarely what to do. Each text here names
the likely cause and what to check, so the console shows a state the
operator can act on instead of a traceback.
"""

from __future__ import annotations

import asyncio
from enum import StrEnum

# Connection / session codes.
CLIENT_ID_IN_USE = 326
COMPETING_SESSION = 10197
COULD_NOT_CONNECT = 502
NOT_CONNECTED = 504
CONNECTIVITY_LOST = 1100
CONNECTIVITY_RESTORED_DATA_LOST = 1101
CONNECTIVITY_RESTORED = 1102
# Request / order codes.
NO_SECURITY_DEFINITION = 200
ORDER_REJECTED = 201
ORDER_CANCELLED = 202
CANCEL_NOT_FOUND = 10147
CANCEL_NOT_CANCELLABLE = 161
HMDS_ERROR = 162
# Modifications (placeOrder again with the same orderId).
DUPLICATE_ORDER_ID = 103  # the id of an order that is no longer open: not a modification
MODIFY_FILLED = 104  # "Cannot modify a filled order"
MODIFY_MISMATCH = 105  # "Order being modified does not match original order"
ORDER_NOT_FOUND = 135  # "Can't find order with id =" (also a finished bracket parent)
MODIFY_IN_PROGRESS = 2102  # "Unable to modify this order as it is still being processed"

# Data farms: broken vs OK. 2108 ("inactive but should be available upon demand")
# is listed with the broken ones: until the farm answers, quotes may not come.
FARM_BROKEN = frozenset({2103, 2105, 2108, 2157})
FARM_OK = frozenset({2104, 2106, 2158})
CONNECTIVITY = frozenset(
    {CONNECTIVITY_LOST, CONNECTIVITY_RESTORED_DATA_LOST, CONNECTIVITY_RESTORED}
)

# Codes ib_async itself treats as warnings: the order stays live at IB.
ORDER_WARNINGS = frozenset({105, 110, 165, 321, 329, 399, 404, 434, 492, 10167})
# Warnings that, answering a modification, mean IB did not apply it (the order keeps
# working as it was): price off the tick grid, validation failure, order type change,
# mismatch with the original, still being processed.
MODIFY_REFUSING_WARNINGS = frozenset({MODIFY_MISMATCH, 110, 321, 329, MODIFY_IN_PROGRESS})


class FarmState(StrEnum):
    BROKEN = "broken"
    OK = "ok"


def farm_state(code: int) -> FarmState | None:
    if code in FARM_BROKEN:
        return FarmState.BROKEN
    if code in FARM_OK:
        return FarmState.OK
    return None


def is_warning(code: int) -> bool:
    """Informational codes that do not end a request or an order (ib_async's rule)."""
    return code in ORDER_WARNINGS or 2100 <= code < 2200


_WHAT_TO_CHECK = (
    "check: is TWS / IB Gateway running and logged in? Is the API enabled "
    "(Configure > API > Settings > Enable ActiveX and Socket Clients)? "
    "Is this machine's IP in 'Trusted IPs'? Is the port right "
    "(7497 paper TWS, 4002 paper Gateway, 7496 live TWS, 4001 live Gateway)?"
)

_TEXTS: dict[int, str] = {
    CLIENT_ID_IN_USE: (
        "client id {client_id} is already in use at {endpoint}: another program (or a "
        "previous run that has not been released yet) is connected with it; stop it or "
        "set a different IB_CLIENT_ID"
    ),
    COMPETING_SESSION: (
        "no market data: the IB account is logged in elsewhere (competing live session, "
        "code 10197); log out of the other TWS / mobile / web session or use a paper login "
        "for this console"
    ),
    COULD_NOT_CONNECT: "could not connect to TWS at {endpoint} (code 502); " + _WHAT_TO_CHECK,
    NOT_CONNECTED: "not connected to TWS (code 504): the request was not sent",
    CONNECTIVITY_LOST: (
        "TWS lost its connection to IB's servers (code 1100): no data, no orders until it "
        "is restored; check TWS's own network connection"
    ),
    CONNECTIVITY_RESTORED_DATA_LOST: (
        "TWS's connection to IB restored, market data lost (code 1101): resubscribing"
    ),
    CONNECTIVITY_RESTORED: "TWS's connection to IB restored, data maintained (code 1102)",
    2103: "IB market data farm connection broken (code 2103): quotes may stop",
    2105: "IB historical data farm connection broken (code 2105): history requests may fail",
    2108: "IB market data farm inactive (code 2108): quotes resume on demand",
    2157: "IB security-definition farm connection broken (code 2157)",
    2104: "IB market data farm connection OK (code 2104)",
    2106: "IB historical data farm connection OK (code 2106)",
    2158: "IB security-definition farm connection OK (code 2158)",
    354: (
        "no market data subscription for this symbol (code 354): subscribe in Account "
        "Management, or set IB_MARKET_DATA_TYPE=3 for delayed data"
    ),
}


def describe_code(code: int, ib_message: str, *, client_id: int = 0, endpoint: str = "") -> str:
    """The operator-readable text for an IB message code, with IB's own text appended."""
    template = _TEXTS.get(code)
    if template is None:
        return f"IB {code}: {ib_message}"
    text = template.format(client_id=client_id, endpoint=endpoint)
    return f"{text} [IB: {ib_message}]" if ib_message else text


def describe_connect_failure(exc: BaseException, *, endpoint: str, client_id: int) -> str:
    """Why a connection attempt failed, for the console's state line and the alert."""
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused at {endpoint}: nothing listens there; {_WHAT_TO_CHECK}"
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return (
            f"no API handshake from {endpoint} in time: TWS may be starting, showing a "
            f"dialog (accept incoming connection?), or the port is not the API port; "
            f"{_WHAT_TO_CHECK}"
        )
    if isinstance(exc, OSError):
        return f"cannot reach {endpoint} ({exc.strerror or exc}); {_WHAT_TO_CHECK}"
    return f"connection to {endpoint} failed ({exc!r}); {_WHAT_TO_CHECK}"
