# SPDX-License-Identifier: MIT
"""Client tokens: the HS256 JWTs presenced checks on /v1/ws (protocol.md 1.1)."""
import base64
import hashlib
import hmac
import json
import math
import time
from typing import Any, Dict, List, Optional, Union


def _b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def mint_token(secret: Union[str, bytes], user_id: str, *, ttl: int = 3600,
               expires_at: Optional[int] = None, watch: Union[List[str], str, None] = None,
               meta: Optional[Dict[str, Any]] = None, audience: Union[str, List[str], None] = None, issuer: Optional[str] = None,
               not_before: Optional[int] = None, device: Optional[str] = None,
               channels: Union[List[str], str, None] = None, observe: Union[List[str], str, None] = None,
               claims: Optional[Dict[str, Any]] = None,
               now: Optional[float] = None) -> str:
    """Mint a client token.

    ``sub`` = user_id, ``exp`` = now + ttl seconds (or ``expires_at``), ``watch``
    ("*" or user ids; absent: only the user itself), ``meta`` (a dict stored with
    the session), ``aud`` (required by a presenced with --jwt-audience, refused by one without),
    ``iss`` (must equal --jwt-issuer), ``nbf``, ``iat``; ``claims``
    adds other claims as they are.
    """
    if not secret:
        raise ValueError("mint_token: secret is required")
    if not isinstance(user_id, str) or not user_id:
        raise ValueError("mint_token: user_id must be a non-empty string")
    if isinstance(secret, str):
        secret = secret.encode()
    # JWT times are seconds. A time in milliseconds (time.time() * 1000, or
    # a value taken from presenced's API, which answers in ms) made a token
    # valid for ~50,000 years, which presenced accepts; 1e11 s is the year
    # 5138, so anything above it is taken for that mistake (as the Node SDK).
    # (A not_before in milliseconds makes a token no one can use: harmless.)
    if expires_at is not None and (isinstance(expires_at, bool) or not isinstance(expires_at, (int, float))
                                   or not math.isfinite(expires_at) or expires_at >= 1e11):
        raise ValueError("mint_token: expires_at is seconds since the epoch "
                         f"(a finite number below 1e11); {expires_at!r} is not (milliseconds?)")
    # At least a second, as the Node and Go SDKs: ttl=0 (meant as "no expiry")
    # or a negative one minted a token dead on arrival (presenced's leeway let
    # it connect for 5 s, then closed it 4001). A token expired on purpose: expires_at.
    if expires_at is None and (isinstance(ttl, bool) or not isinstance(ttl, (int, float))
                               or not math.isfinite(ttl) or ttl < 1):
        raise ValueError(f"mint_token: ttl must be a number of seconds >= 1, not {ttl!r}")
    now_s = int(time.time() if now is None else now)
    body: Dict[str, Any] = {"sub": user_id, "exp": int(expires_at) if expires_at is not None else now_s + int(ttl),
                            "iat": now_s}
    if watch is not None:
        if watch != "*" and not (isinstance(watch, list) and all(isinstance(w, str) for w in watch)):
            raise ValueError("mint_token: watch must be '*' or a list of user ids")
        body["watch"] = watch
    if meta is not None:
        if not isinstance(meta, dict):
            raise ValueError("mint_token: meta must be a dict")
        body["meta"] = meta
    if audience is not None:
        body["aud"] = audience
    if issuer is not None:
        body["iss"] = issuer
    for name, value in (("channels", channels), ("observe", observe)):
        if value is None:
            continue
        if value != "*" and not (isinstance(value, list) and all(isinstance(p, str) for p in value)):
            raise ValueError(f"mint_token: {name} must be '*' or a list of channel patterns")
        body[name] = value
    if device is not None:
        body["device"] = device
    if not_before is not None:
        body["nbf"] = int(not_before)
    body.update(claims or {})
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    payload = _b64(json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode())
    sig = hmac.new(secret, f"{head}.{payload}".encode(), hashlib.sha256).digest()
    return f"{head}.{payload}.{_b64(sig)}"
