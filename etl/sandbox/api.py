"""The API functions the sandbox answers, with LACRM's parameters, results and errors.

`call(store, function, parameters)` returns the function's JSON result or raises ApiError
(HTTP 400). Parameters are checked the way a strict server would: a missing required
parameter, a wrong type, an id that is not a 31-digit string, an unknown id or a page size
over 10,000 is refused, so client bugs show up here rather than in production.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from etl.sandbox.errors import (
    INVALID_PARAMETER,
    MISSING_PARAMETER,
    UNKNOWN_FUNCTION,
    ApiError,
)
from etl.sandbox.store import Store, is_uid

DEFAULT_PAGE_SIZE = 500
MAX_PAGE_SIZE = 10_000
RECORD_TYPES = ("Contacts", "Companies")
SORT_DIRECTIONS = ("Ascending", "Descending")
WRITE_FUNCTIONS = frozenset(
    {"CreateContact", "CreateRelationship", "EditRelationship", "DeleteRelationship"}
)

Params = Mapping[str, Any]


# --- parameter readers ----------------------------------------------------------------


def _uid(params: Params, key: str) -> str:
    value = params.get(key)
    if value is None:
        raise ApiError(MISSING_PARAMETER, f"{key} is required.")
    if not is_uid(value):
        raise ApiError(INVALID_PARAMETER, f"{key} must be a 31-digit id given as a string.")
    return value


def _text(params: Params, key: str, *, required: bool = False) -> str | None:
    value = params.get(key)
    if value is None:
        if required:
            raise ApiError(MISSING_PARAMETER, f"{key} is required.")
        return None
    if not isinstance(value, str):
        raise ApiError(INVALID_PARAMETER, f"{key} must be text.")
    return value


def _choice(params: Params, key: str, choices: Sequence[str]) -> str | None:
    value = _text(params, key)
    if value is not None and value not in choices:
        raise ApiError(INVALID_PARAMETER, f"{key} must be one of: {', '.join(choices)}.")
    return value


def _positive_int(params: Params, key: str, default: int) -> int:
    value = params.get(key, default)
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ApiError(INVALID_PARAMETER, f"{key} must be a whole number of at least 1.")
    return value


def _page_request(params: Params) -> tuple[int, int]:
    size = _positive_int(params, "MaxNumberOfResults", DEFAULT_PAGE_SIZE)
    if size > MAX_PAGE_SIZE:
        raise ApiError(INVALID_PARAMETER, f"MaxNumberOfResults can be at most {MAX_PAGE_SIZE}.")
    return size, _positive_int(params, "Page", 1)


def _page(items: Sequence[Any], params: Params) -> tuple[Sequence[Any], bool]:
    """The requested page of items and whether more pages follow."""
    size, page = _page_request(params)
    start = (page - 1) * size
    return items[start : start + size], len(items) > start + size


# --- contacts -------------------------------------------------------------------------

SORT_KEYS: dict[str, Callable[[dict[str, Any]], str]] = {
    "FirstName": lambda contact: (contact["Name"] or {}).get("FirstName", "").casefold(),
    "LastName": lambda contact: (contact["Name"] or {}).get("LastName", "").casefold(),
    "CompanyName": lambda contact: contact["Company Name"].casefold(),
    "DateCreated": lambda contact: contact["DateCreated"],
    "LastUpdate": lambda contact: contact["LastUpdate"],
}
SORT_BY = ("Relevance", *SORT_KEYS)


def _contacts_page(store: Store, contact_ids: Sequence[str], params: Params) -> dict[str, Any]:
    page, more = _page(contact_ids, params)
    return {"HasMoreResults": more, "Results": [store.contact(cid) for cid in page]}


def get_contacts(store: Store, params: Params) -> dict[str, Any]:
    record_type = _choice(params, "RecordTypeFilter", RECORD_TYPES)
    sort_by = _choice(params, "SortBy", SORT_BY)
    direction = _choice(params, "SortDirection", SORT_DIRECTIONS)
    _page_request(params)  # refuse a bad page size before the search
    contact_ids = store.search_contacts(_text(params, "SearchTerms") or "", record_type)
    if sort_by in SORT_KEYS:
        key = SORT_KEYS[sort_by]
        contact_ids.sort(key=lambda cid: key(store.contacts[cid]))
    if direction == "Descending":
        contact_ids.reverse()
    return _contacts_page(store, contact_ids, params)


def get_contacts_by_id(store: Store, params: Params) -> dict[str, Any]:
    contact_ids = params.get("ContactIds")
    if contact_ids is None:
        raise ApiError(MISSING_PARAMETER, "ContactIds is required.")
    if not isinstance(contact_ids, list) or not all(is_uid(cid) for cid in contact_ids):
        raise ApiError(INVALID_PARAMETER, "ContactIds must be a list of 31-digit string ids.")
    known = [cid for cid in dict.fromkeys(contact_ids) if cid in store.contacts]
    return _contacts_page(store, known, params)


def get_contact(store: Store, params: Params) -> dict[str, Any]:
    return store.contact(_uid(params, "ContactId"))


def create_contact(store: Store, params: Params) -> dict[str, Any]:
    return {"ContactId": store.add_contact(params)}


# --- relationships --------------------------------------------------------------------


def create_relationship(store: Store, params: Params) -> dict[str, Any]:
    relationship = store.add_relationship(
        _uid(params, "ContactId1"), _uid(params, "ContactId2"), _text(params, "Note") or ""
    )
    return {"RelationshipId": relationship.relationship_id}


def edit_relationship(store: Store, params: Params) -> dict[str, Any]:
    relationship_id = _uid(params, "RelationshipId")
    store.edit_relationship(relationship_id, _text(params, "Note", required=True) or "")
    return {}


def delete_relationship(store: Store, params: Params) -> dict[str, Any]:
    store.delete_relationship(_uid(params, "RelationshipId"))
    return {}


def get_relationship(store: Store, params: Params) -> dict[str, Any]:
    return store.relationship_view(store.relationship(_uid(params, "RelationshipId")))


def get_relationships_attached_to_contact(store: Store, params: Params) -> dict[str, Any]:
    _page_request(params)
    relationships = store.relationships_of(_uid(params, "ContactId"))
    page, more = _page(relationships, params)
    return {"HasMoreResults": more, "Results": store.relationship_views(page)}


FUNCTIONS: dict[str, Callable[[Store, Params], Any]] = {
    "GetContacts": get_contacts,
    "GetContactsById": get_contacts_by_id,
    "GetContact": get_contact,
    "CreateContact": create_contact,
    "CreateRelationship": create_relationship,
    "EditRelationship": edit_relationship,
    "DeleteRelationship": delete_relationship,
    "GetRelationship": get_relationship,
    "GetRelationshipsAttachedToContact": get_relationships_attached_to_contact,
}


def call(store: Store, function: str, parameters: Params) -> Any:
    """Run one API function against the store; raises ApiError for anything LACRM refuses."""
    try:
        handler = FUNCTIONS[function]
    except KeyError:
        raise ApiError(UNKNOWN_FUNCTION, f"There is no API function named {function!r}.") from None
    return handler(store, parameters)
