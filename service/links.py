"""Personal join links: unguessable, stored only as hashes, revocable, expiring.

A link's token is HMAC-SHA256(link key, invitation id + generation), 256 bits:
nobody without the key can make or guess one, and the service can make the
same token again for an update email or a calendar copy without keeping it.
The database holds only SHA-256(token), and a link is found by it. Reissuing
moves to the next generation and revokes the old one. The key is [join]
link_secret, or data_dir/link_secret when that is empty (replicas must share
it). Rotating it after a leak: the next mail of each invitation carries its link
made with the new key, registered then, and revokes the one made with the old
key; to cut a leaked link off at once, reissue it.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import re
import uuid

TOKEN_SHAPE = re.compile(r"^[A-Za-z0-9_-]{43}$")


class LinkKeys:
    def __init__(self, key: str, public_url: str) -> None:
        self._key = hashlib.sha256(b"forumbridge join links\0" + key.encode()).digest()
        self.base = public_url.rstrip("/")

    def token(self, invitation_id: uuid.UUID, generation: int) -> str:
        mac = hmac.new(self._key, f"{invitation_id}:{generation}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).decode().rstrip("=")

    def url(self, token: str) -> str:
        return f"{self.base}/j/{token}"

    def form_token(self, token: str, purpose: str) -> str:
        """A value a form on the participant's page must send back (against cross-site posts)."""
        mac = hmac.new(self._key, f"form:{purpose}:{token}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac[:18]).decode()

    def check_form_token(self, token: str, purpose: str, sent: str) -> bool:
        return hmac.compare_digest(self.form_token(token, purpose), sent or "")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def plausible(token: str) -> bool:
    """Whether `token` has the shape of one of ours (others are answered 404 without a lookup)."""
    return TOKEN_SHAPE.fullmatch(token) is not None
