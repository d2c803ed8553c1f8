"""Field types shared by the API's request models.

Every constraint the operations check is stated here too, so that the OpenAPI document (built
from the models) describes exactly what is accepted.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, ConfigDict, Field

from pgcourier import ops, patterns


def whole(value: Any) -> Any:
    # JSON Schema counts 5.0 as an integer; strict pydantic would not.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


HeaderName = Annotated[str, Field(pattern=ops.HEADER_NAME.pattern)]
HeaderValue = Annotated[str, Field(max_length=1000, pattern=r"^[^\x00-\x1f\x7f]*$")]
Headers = Annotated[dict[HeaderName, HeaderValue], Field(max_length=20)]
Timeout = Annotated[float, Field(ge=1, le=300)]
Pattern = Annotated[str, Field(pattern=patterns.PATTERN_RE.pattern)]
Patterns = Annotated[list[Pattern], Field(min_length=1, max_length=patterns.MAX_PATTERNS)]
Url = Annotated[str, Field(max_length=ops.MAX_URL, pattern=ops.URL_PATTERN)]
Description = Annotated[str, Field(max_length=1000)]
# whsec_ for the standard scheme (checked against the scheme: see the routes' notes).
Secret = Annotated[str, Field(pattern=ops.RAW_SECRET_PATTERN)]
Scheme = Literal["standard", "github", "timestamped-hex", "stripe-style"]
Status = Annotated[int, Field(ge=300, le=599), BeforeValidator(whole)]
Statuses = Annotated[list[Status], Field(max_length=100)]
MaxInFlight = Annotated[int, Field(ge=1, le=1000), BeforeValidator(whole)]
RateLimit = Annotated[float, Field(gt=0, le=10_000)]
EventType = Annotated[str, Field(pattern=patterns.EVENT_TYPE_RE.pattern)]
Key = Annotated[str, Field(min_length=1, max_length=255)]


# (The bounds before the validator: the other way round, pydantic documents them as "ge"/"le".)
GraceSeconds = Annotated[int, Field(ge=0, le=ops.MAX_GRACE_SECONDS), BeforeValidator(whole)]
DeadId = Annotated[int, Field(ge=1, le=ops.MAX_ID), BeforeValidator(whole)]
# Strict: a JSON API takes true, not "yes"; 5, not "5".
STRICT = ConfigDict(extra="forbid", strict=True)


SlackChannel = Annotated[str, Field(pattern=ops.SLACK_CHANNEL_PATTERN)]
SlackToken = Annotated[
    str, Field(pattern=ops.SLACK_TOKEN_PATTERN, json_schema_extra={"writeOnly": True})
]
Template = Annotated[str, Field(max_length=3000)]


# Any characters but control characters, 1-255 (courier.valid_tenant).
Tenant = Annotated[str, Field(pattern=ops.TENANT_PATTERN)]
