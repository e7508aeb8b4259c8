"""The video connectors' exception family: the only exceptions that leave connectors/video/."""
from __future__ import annotations


class VideoError(Exception):
    """Base of every video connector error; `status` is the HTTP status when there was one,
    `key` the provider's own error code when it gave one (BigBlueButton's messageKey)."""

    def __init__(self, message: str, *, status: int | None = None, key: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.key = key


class VideoAuthError(VideoError):
    """Credentials or a signature are wrong: the provider refused our secret, or a webhook carried a
    missing or wrong signature or token. Fix the configuration; retrying unchanged will not help."""


class VideoUnavailable(VideoError):
    """The provider could not be reached, timed out, answered 5xx/408/429 or answered something
    unusable: retry later."""


class VideoRejected(VideoError):
    """The request itself is wrong (the provider refused it, or a webhook body is malformed, or the
    meeting or conference cannot be served by this provider); sending it again unchanged fails again."""
