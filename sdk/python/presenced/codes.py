# SPDX-License-Identifier: MIT
"""The daemon's error codes, as constants to match ``PresenceError.code``
against (``if e.code == codes.NO_SESSION``), as the Go SDK's ``Code...``
constants and the Node SDK's ``ErrorCode`` type name them: a misspelt
constant is an AttributeError where a misspelt string matched nothing.
Each constant is its code in upper case; tests/test_codes.py checks that
every code of docs/api.md and protocol.md 5.1-5.5 is here."""

# The HTTP API (docs/api.md#errors) and a refused BackendConnection (protocol.md 5.1, 5.5).
BAD_REQUEST = "bad_request"
BAD_JSON = "bad_json"
BAD_USER_ID = "bad_user_id"
BAD_SESSION_ID = "bad_session_id"
UNAUTHORIZED = "unauthorized"
NOT_FOUND = "not_found"
NO_SESSION = "no_session"
METHOD_NOT_ALLOWED = "method_not_allowed"
REQUEST_TIMEOUT = "request_timeout"
BODY_TOO_LARGE = "body_too_large"
URI_TOO_LONG = "uri_too_long"
HEADERS_TOO_LARGE = "headers_too_large"
NOT_IMPLEMENTED = "not_implemented"
HOST_NOT_ALLOWED = "host_not_allowed"
SHUTTING_DOWN = "shutting_down"
TOO_MANY_CONNECTIONS = "too_many_connections"
STORE_UNAVAILABLE = "store_unavailable"
# Deprecated: presenced no longer sends it (a failed kick said store_error
# until 2026-12-08; now store_unavailable, as every other store failure).
STORE_ERROR = "store_error"
OUT_OF_MEMORY = "out_of_memory"
INTERNAL = "internal"
# Channels (protocol.md 4), status that people set (6), HTTP sessions (5.5).
BAD_CHANNEL = "bad_channel"
NOT_MEMBER = "not_member"
BAD_AVAILABILITY = "bad_availability"
BAD_MESSAGE = "bad_message"
BAD_EXPIRY = "bad_expiry"
NOT_SUPPORTED = "not_supported"
BAD_TTL = "bad_ttl"
BAD_META = "bad_meta"
BAD_STATUS = "bad_status"
BAD_DEVICE = "bad_device"
SESSION_EXISTS = "session_exists"
TOO_MANY_SESSIONS = "too_many_sessions"
# A refused BackendConnection (protocol.md 5.1).
BAD_ORIGIN = "bad_origin"
TOO_MANY_ORIGINS = "too_many_origins"
BAD_UPGRADE = "bad_upgrade"
BAD_VERSION = "bad_version"
# Not the daemon's: no answer came (status 0), an answer that is not JSON,
# and a BackendConnection whose origin another connection took (it stopped).
NETWORK = "network"
BAD_RESPONSE = "bad_response"
ORIGIN_TAKEN_OVER = "origin_taken_over"

# A BackendConnection's refused op (on_rejected's code, a refused join's
# LeftNotice.code) and refused frame (on_error's PresenceError), protocol.md 5.2.
BAD_OP = "bad_op"
SESSION_OWNED = "session_owned"
BAD_DATA = "bad_data"
DATA_TOO_LARGE = "data_too_large"
TOO_MANY_CHANNELS = "too_many_channels"
NOT_JOINED = "not_joined"
UNKNOWN_TYPE = "unknown_type"
BAD_FIELD = "bad_field"
TOO_MANY_OPS = "too_many_ops"
RATE_LIMITED = "rate_limited"
