"""The JetStream stream the alerts go to: checked, created or updated.

At start-up a stream that cannot take the alerts stops the gateway
(`StreamError`: missing with `stream_create: false`, subjects that miss the
alerts', JetStream off). After start-up the same findings only degrade
delivery: the publisher keeps the alerts and asks again, and creates the
stream again if it was deleted and the gateway may create it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js import api as js_api

from gateway.errors import StreamError
from gateway.logs import log
from gateway.subject import SubjectTemplate

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


class StreamCheckFailed(Exception):
    """A passing problem (a timeout, the connection going): ask again later."""


async def prepare_stream(js: JetStreamContext, wanted: StreamSettings) -> int | None:
    """Make sure `wanted` exists and takes the alerts; return its max_msg_size
    (None when unlimited).

    StreamError when it cannot be used as configured; StreamCheckFailed on a
    passing problem.
    """
    try:
        return await _prepare(js, wanted)
    except nats.js.errors.ServiceUnavailableError:
        raise StreamError(
            "JetStream is not enabled on the NATS server (start it with -js)"
        ) from None
    except StreamError:
        raise
    except (nats.errors.Error, TimeoutError, OSError) as exc:
        raise StreamCheckFailed(type(exc).__name__) from exc


async def _prepare(js: JetStreamContext, wanted: StreamSettings) -> int | None:
    try:
        info = await js.stream_info(wanted.name)
    except nats.js.errors.NotFoundError:
        if not wanted.create:
            raise StreamError(
                f"JetStream stream {wanted.name!r} does not exist; create it "
                f"(subjects {', '.join(wanted.subjects)}) or set stream_create: true"
            ) from None
        info = await js.add_stream(stream_config(wanted))
        log(
            logging.INFO,
            "stream created",
            LOG,
            stream=wanted.name,
            subjects=",".join(wanted.subjects),
        )
        return _limit(info.config.max_msg_size)
    if wanted.create:
        info = await js.update_stream(stream_config(wanted))
        return _limit(info.config.max_msg_size)
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
    if info.config.duplicate_window and info.config.duplicate_window < wanted.duplicate_window:
        log(
            logging.WARNING,
            "stream duplicate window is shorter than dedup_window",
            LOG,
            stream=wanted.name,
            duplicate_window=info.config.duplicate_window,
        )
    return _limit(info.config.max_msg_size)


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
