"""The JetStream stream the alerts go to: checked, created or updated.

`inspect_stream` only reads, for `check` and for the gateway alike;
`prepare_stream` then creates or updates the stream when the gateway may.

At start-up a stream that cannot take the alerts stops the gateway
(`StreamError`: missing with `stream_create: false`, subjects that miss the
alerts', JetStream off). After start-up the same findings only degrade
delivery: the publisher keeps the alerts and asks again, and creates the
stream again if it was deleted and the gateway may create it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js import api as js_api

from gateway.errors import StreamError
from gateway.logs import log
from gateway.subject import SubjectTemplate

if TYPE_CHECKING:
    from gateway.config import Settings

LOG = logging.getLogger("gateway.nats")


@dataclass(frozen=True)
class StreamSettings:
    name: str = "FALCO"
    subjects: tuple[str, ...] = ("falco.>",)
    create: bool = False
    storage: str = "file"
    replicas: int = 1
    max_age: float = 0.0
    duplicate_window: float = 120.0
    # The alerts' subjects, checked against an existing stream's own subjects.
    subject_template: str = ""


def stream_settings(s: Settings) -> StreamSettings:
    """The stream the configuration asks for: what the gateway prepares and
    `check` inspects."""
    return StreamSettings(
        name=s.stream_name,
        subjects=s.stream_subject_list,
        create=s.stream_create,
        storage=s.stream_storage,
        replicas=s.stream_replicas,
        max_age=s.stream_max_age,
        duplicate_window=max(s.dedup_window, 1.0),
        subject_template=s.subject_template,
    )


class StreamCheckFailed(Exception):
    """A passing problem (a timeout, the connection going): ask again later."""


async def inspect_stream(js: JetStreamContext, wanted: StreamSettings) -> js_api.StreamInfo | None:
    """Read-only: the stream as it is, or None when it is missing and the gateway
    may create it. Changes nothing on the server (`check` reports with it).

    StreamError when the stream cannot take the alerts as configured (missing
    with `stream_create: false`, subjects that miss the alerts', JetStream off);
    StreamCheckFailed on a passing problem.
    """
    with _asking():
        return await _inspect(js, wanted)


async def _inspect(js: JetStreamContext, wanted: StreamSettings) -> js_api.StreamInfo | None:
    try:
        info = await js.stream_info(wanted.name)
    except nats.js.errors.NotFoundError:
        if wanted.create:
            return None
        raise StreamError(
            f"JetStream stream {wanted.name!r} does not exist and stream_create is off; "
            f"create it (subjects {', '.join(wanted.subjects)}) or set stream_create: true"
        ) from None
    if wanted.create:
        return info  # the gateway sets the subjects (validated) when it updates it
    subjects = info.config.subjects or []
    template = SubjectTemplate(wanted.subject_template) if wanted.subject_template else None
    missing = template.uncaptured(subjects) if template is not None else None
    if missing is not None:
        # JetStream would answer every such alert "no responders", forever.
        raise StreamError(
            f"JetStream stream {wanted.name!r} (subjects {', '.join(subjects) or 'none'}) "
            f"does not capture {missing!r}, a subject of subject_template "
            f"{wanted.subject_template!r}; add it to the stream's subjects, or set "
            "stream_create: true to have the gateway set them"
        )
    return info


async def prepare_stream(js: JetStreamContext, wanted: StreamSettings) -> int | None:
    """Make sure `wanted` exists and takes the alerts (creating or updating it when
    the gateway may); return its max_msg_size (None when unlimited).

    StreamError when it cannot be used as configured; StreamCheckFailed on a
    passing problem.
    """
    info = await inspect_stream(js, wanted)
    with _asking():
        if info is None:
            info = await js.add_stream(stream_config(wanted))
            log(
                logging.INFO,
                "stream created",
                LOG,
                stream=wanted.name,
                subjects=",".join(wanted.subjects),
            )
        elif wanted.create:
            info = await js.update_stream(stream_config(wanted))
    duplicate_window = info.config.duplicate_window
    if not wanted.create and duplicate_window and duplicate_window < wanted.duplicate_window:
        log(
            logging.WARNING,
            "stream duplicate window is shorter than dedup_window",
            LOG,
            stream=wanted.name,
            duplicate_window=duplicate_window,
        )
    return _limit(info.config.max_msg_size)


@contextlib.contextmanager
def _asking() -> Iterator[None]:
    """JetStream's answers as the gateway's: off for good, or a passing problem."""
    try:
        yield
    except nats.js.errors.ServiceUnavailableError:
        raise StreamError(
            "JetStream is not enabled on the NATS server (start it with -js)"
        ) from None
    except (nats.errors.Error, TimeoutError, OSError) as exc:
        raise StreamCheckFailed(type(exc).__name__) from exc


def stream_config(settings: StreamSettings) -> js_api.StreamConfig:
    return js_api.StreamConfig(
        name=settings.name,
        subjects=list(settings.subjects),
        storage=js_api.StorageType(settings.storage),
        num_replicas=settings.replicas,
        max_age=settings.max_age or None,
        duplicate_window=settings.duplicate_window,
    )


def _limit(max_msg_size: int | None) -> int | None:
    return max_msg_size if max_msg_size is not None and max_msg_size > 0 else None
