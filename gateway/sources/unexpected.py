"""An exception no one planned for, met while handling one alert or request.

The sources catch it at their edge (one gRPC message, one HTTP request) so that
one bad input never ends a path: it is counted, and logged at error with its
traceback the first time each kind of exception shows up in each place, so a
bug that every request hits logs once, not once per request.
"""

from __future__ import annotations

import logging
import traceback

from gateway.logs import OncePer, log
from gateway.telemetry import Telemetry


class UnexpectedErrors:
    def __init__(self, telemetry: Telemetry, component: str, logger: logging.Logger) -> None:
        self.telemetry = telemetry
        self.component = component
        self.logger = logger
        self._seen = OncePer()

    def record(self, exc: BaseException, what: str) -> None:
        """Count `exc`; log it with its traceback if its kind is new here."""
        self.telemetry.unexpected_error(self.component)
        kind = type(exc).__qualname__
        if self._seen.first(kind):
            log(
                logging.ERROR,
                f"unexpected error {what} (logged once per kind; counted in "
                "falco_nats_gateway_unexpected_errors_total)",
                self.logger,
                component=self.component,
                error=f"{kind}: {exc}"[:512],
                traceback=_bounded("".join(traceback.format_exception(exc))),
            )


def _bounded(text: str, limit: int = 16384) -> str:
    # An exception's message can carry a sender's text: its start and end are enough.
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n... ({len(text) - limit} characters left out) ...\n{text[-half:]}"
