"""The one error the sandbox's API answers with: HTTP 400 `{"ErrorCode", "ErrorDescription"}`.

The codes are opaque to clients (LACRM_API.md); these names only make the sandbox's own
tests and logs readable.
"""

from __future__ import annotations

from typing import Any

INVALID_API_KEY = "InvalidApiKey"
INVALID_REQUEST = "InvalidRequest"
UNKNOWN_FUNCTION = "UnknownFunction"
MISSING_PARAMETER = "MissingParameter"
INVALID_PARAMETER = "InvalidParameter"
CONTACT_NOT_FOUND = "ContactNotFound"
RELATIONSHIP_NOT_FOUND = "RelationshipNotFound"
COMPANY_EXISTS = "CompanyAlreadyExists"


class ApiError(Exception):
    """A request the CRM refuses; becomes an HTTP 400 error object."""

    def __init__(self, code: str, description: str) -> None:
        super().__init__(f"{code}: {description}")
        self.code = code
        self.description = description

    def to_json(self) -> dict[str, Any]:
        return {"ErrorCode": self.code, "ErrorDescription": self.description}
