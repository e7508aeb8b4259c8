"""A Jitsi token verifier that follows the rules of Jitsi's own, written without PyJWT.

Jitsi Meet's Prosody plugin mod_auth_token checks tokens in resources/prosody-plugins/token/
util.lib.lua, with the JWT library luajwtjitsi (jwt.verify). In that order:

1. three dot-separated base64url parts, header and body JSON;
2. header ``typ`` is exactly ``"JWT"``;
3. header ``alg`` is exactly the configured signature algorithm (HS256 with app_secret, RS256
   with the ASAP key server's public key, found by the header's ``kid``, which is then required);
   ``none`` or any other value is refused before the signature is looked at;
4. the signature verifies;
5. ``exp`` and ``nbf``, where present, are numbers; the token is refused when
   ``now >= exp`` or ``now < nbf`` (os.time(), whole seconds, no leeway);
6. ``iss`` is present and one of the accepted issuers (default: app_id);
7. ``room`` is present (asap_require_room_claim, default true);
8. ``aud`` is present and equal to an accepted audience, or an accepted audience is ``*``;
   Lua compares a table with a string as unequal, so an array ``aud`` only passes with ``*``;
9. on joining a room (verify_room): the MUC room node, which Prosody lower-cases, must equal
   ``string.lower(room)`` unless the claim is ``*``; with domain verification the room's JID must
   be ``lower(room)@conference.lower(sub)`` (``sub`` ``*`` accepts any domain), or for a tenant
   ``[tenant]room@conference.domain`` with ``sub`` = the tenant.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa


class TokenRefused(Exception):
    """Jitsi would refuse the token; the message is the reason Prosody logs."""


def _b64url(segment: str) -> bytes:
    padded = segment + "=" * (-len(segment) % 4)
    try:
        return base64.urlsafe_b64decode(padded.encode("ascii"))
    except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
        raise TokenRefused(f"Invalid token: {exc}") from None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass
class JitsiTokenVerifier:
    """Verifies tokens as a Prosody VirtualHost with ``authentication = "token"`` would.

    `domain` is the deployment's main domain (muc_mapper_domain_base); the MUC component is
    ``conference.<domain>``.
    """

    app_id: str
    domain: str
    app_secret: str | None = None
    public_key_pem: str | None = None
    signature_algorithm: str = "HS256"
    accepted_issuers: Sequence[str] | None = None
    accepted_audiences: Sequence[str] = ("*",)
    require_room_claim: bool = True
    enable_domain_verification: bool = True

    def verify_token(self, token: str, now: float | None = None) -> dict[str, Any]:
        """The claims, if the token passes steps 1 to 8; else TokenRefused."""
        segments = [s for s in token.split(".") if s]  # Lua's gmatch("[^.]+") skips empty parts
        if len(segments) != 3:
            raise TokenRefused("Invalid token")
        try:
            header = json.loads(_b64url(segments[0]))
            body = json.loads(_b64url(segments[1]))
        except ValueError:
            raise TokenRefused("Invalid header or body") from None
        if not isinstance(header, dict) or not isinstance(body, dict):
            raise TokenRefused("Invalid header or body")
        signature = _b64url(segments[2])
        if header.get("typ") != "JWT":
            raise TokenRefused("Invalid typ")
        if header.get("alg") != self.signature_algorithm:
            raise TokenRefused("Invalid or incorrect alg")
        signing_input = f"{segments[0]}.{segments[1]}".encode("ascii")
        if not self._signature_ok(header, signing_input, signature):
            raise TokenRefused("Invalid signature")
        exp, nbf = body.get("exp"), body.get("nbf")
        if exp is not None and not _is_number(exp):
            raise TokenRefused("exp must be number")
        if nbf is not None and not _is_number(nbf):
            raise TokenRefused("nbf must be number")
        clock = int(time.time()) if now is None else now
        if exp is not None and clock >= exp:
            raise TokenRefused("Not acceptable by exp")
        if nbf is not None and clock < nbf:
            raise TokenRefused("Not acceptable by nbf")
        issuers = self.accepted_issuers if self.accepted_issuers is not None else [self.app_id]
        if body.get("iss") is None:
            raise TokenRefused("'iss' claim is missing")
        if not _claim_accepted(body["iss"], issuers):
            raise TokenRefused("Invalid issuer ('iss' claim)")
        if self.require_room_claim and body.get("room") is None:
            raise TokenRefused("'room' claim is missing")
        if body.get("aud") is None:
            raise TokenRefused("'aud' claim is missing")
        if not _claim_accepted(body["aud"], self.accepted_audiences):
            raise TokenRefused("Invalid audience ('aud' claim)")
        return body

    def _signature_ok(self, header: dict[str, Any], signing_input: bytes, signature: bytes) -> bool:
        if self.signature_algorithm == "HS256":
            if not self.app_secret:
                raise TokenRefused("no app_secret configured")
            expected = hmac.new(self.app_secret.encode("utf-8"), signing_input, hashlib.sha256).digest()
            return hmac.compare_digest(expected, signature)
        if self.signature_algorithm == "RS256":
            if header.get("kid") is None:
                raise TokenRefused("'kid' claim is missing")
            if not self.public_key_pem:
                raise TokenRefused("could not obtain public key")
            key = serialization.load_pem_public_key(self.public_key_pem.encode("ascii"))
            if not isinstance(key, rsa.RSAPublicKey):
                return False
            try:
                key.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
            except InvalidSignature:
                return False
            return True
        raise TokenRefused("Algorithm not supported")

    def verify_room(self, claims: dict[str, Any], room: str, tenant: str | None = None) -> None:
        """Step 9 for joining `room` (as typed in the URL; Prosody lower-cases the node)."""
        node = room.lower()
        auth_room = claims.get("room")
        if not self.enable_domain_verification:
            if auth_room is not None and auth_room != "*" and node != str(auth_room).lower():
                raise TokenRefused("room not allowed by the token")
            return
        room_to_check = node if auth_room == "*" else str(auth_room)
        sub = claims.get("sub")
        muc = f"conference.{self.domain}"
        if tenant is not None:
            subdomain = tenant if sub == "*" else str(sub)
            expected = f"[{subdomain.lower()}]{room_to_check.lower()}@{muc}"
            actual = f"[{tenant.lower()}]{node}@{muc}"
        else:
            host = muc if sub == "*" else f"conference.{sub}"
            expected = f"{room_to_check.lower()}@{str(host).lower()}"
            actual = f"{node}@{muc}"
        if actual != expected:
            raise TokenRefused(f"token for {expected} used to join {actual}")

    def admit(self, token: str, room: str, now: float | None = None, tenant: str | None = None) -> dict[str, Any]:
        """Connect with `token` and join `room`: the claims if Jitsi would let the user in."""
        claims = self.verify_token(token, now)
        self.verify_room(claims, room, tenant)
        return claims


def _claim_accepted(claim: Any, accepted: Sequence[str]) -> bool:
    return any(a == "*" or (isinstance(claim, str) and claim == a) for a in accepted)
