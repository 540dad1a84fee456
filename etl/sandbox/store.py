"""The sandbox CRM's data: contacts and relationships in memory, in LACRM's own shapes.

Contacts are kept as the dicts GetContact returns (LACRM_API.md), relationships as small
records rendered to GetRelationship's shape on the way out. Ids are 31-digit decimal strings
drawn from a seeded RNG, so one seed file and one `id_seed` give the same ids on every run.
Nothing here knows about HTTP; `api.py` validates parameters and calls these methods.
"""

from __future__ import annotations

import functools
import random
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from etl.sandbox.errors import (
    COMPANY_EXISTS,
    CONTACT_NOT_FOUND,
    INVALID_PARAMETER,
    MISSING_PARAMETER,
    RELATIONSHIP_NOT_FOUND,
    ApiError,
)

UID_DIGITS = 31
NAME_PARTS = ("Salutation", "FirstName", "MiddleName", "LastName", "Suffix")
SANDBOX_USER_ID = "1"
SANDBOX_USER = {"FirstName": "Sandbox", "LastName": "User"}
DEFAULT_ENTRY_TYPE = "Work"


def now_iso() -> str:
    """The current local time as LACRM writes it: `2025-01-20T23:42:57-08:00`."""
    return _iso_second(int(time.time()))


@functools.lru_cache(maxsize=1)
def _iso_second(second: int) -> str:
    # Formatting once per second keeps loading a large seed fast.
    return datetime.fromtimestamp(second).astimezone().isoformat()


def is_uid(value: object) -> bool:
    """True for a 31-digit decimal string with a non-zero first digit (never for a number)."""
    return (
        isinstance(value, str)
        and len(value) == UID_DIGITS
        and value.isascii()
        and value.isdigit()
        and value[0] != "0"
    )


class IdGenerator:
    """Unique 31-digit ids from a seeded RNG.

    A seed file announces its own ids first, so no generated id takes one of them before
    the record that owns it is added.
    """

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)
        self._used: set[str] = set()
        self._announced: set[str] = set()

    def announce(self, uid: str) -> None:
        self._announced.add(uid)

    def reserve(self, uid: str) -> None:
        if uid in self._used:
            raise ApiError(INVALID_PARAMETER, f"The id {uid} is used twice.")
        self._used.add(uid)
        self._announced.discard(uid)

    def new(self) -> str:
        while True:
            uid = str(self._rng.randrange(10 ** (UID_DIGITS - 1), 10**UID_DIGITS))
            if uid not in self._used and uid not in self._announced:
                self._used.add(uid)
                return uid


@dataclass
class Relationship:
    relationship_id: str
    contact_id_1: str
    contact_id_2: str
    note: str
    date_created: str
    date_edited: str

    @property
    def pair(self) -> tuple[str, str]:
        """The unordered pair, lowest id first: (A, B) and (B, A) are one relationship."""
        a, b = self.contact_id_1, self.contact_id_2
        return (a, b) if a <= b else (b, a)


# --- contact fields -------------------------------------------------------------------


def _text_or_empty(fields: Mapping[str, Any], key: str) -> str:
    value = fields.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ApiError(INVALID_PARAMETER, f"{key} must be text.")
    return value.strip()


def name_parts(value: object) -> dict[str, str]:
    """A person's Name, given as one string ("John Q Doe") or as LACRM's parts object."""
    if isinstance(value, str):
        words = value.split()
        first = words[0] if words else ""
        last = words[-1] if len(words) > 1 else ""
        middle = " ".join(words[1:-1])
        return {"Salutation": "", "FirstName": first, "MiddleName": middle, "LastName": last,
                "Suffix": ""}  # fmt: skip
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - set(NAME_PARTS))
        if unknown:
            raise ApiError(INVALID_PARAMETER, f"Unknown Name parts: {', '.join(unknown)}.")
        return {part: _text_or_empty(value, part) for part in NAME_PARTS}
    if value is None:
        return dict.fromkeys(NAME_PARTS, "")
    raise ApiError(INVALID_PARAMETER, "Name must be text or an object of name parts.")


def entry_list(value: object, key: str) -> list[dict[str, str]]:
    """Email or Phone: a list of {Text, Type}; plain strings are accepted as {Text}."""
    if value is None:
        return []
    items = [value] if isinstance(value, str | Mapping) else value
    if not isinstance(items, list):
        raise ApiError(INVALID_PARAMETER, f"{key} must be a list of {{Text, Type}} objects.")
    return [_entry(item, key) for item in items]


def _entry(item: object, key: str) -> dict[str, str]:
    if isinstance(item, str):
        return {"Text": item.strip(), "Type": DEFAULT_ENTRY_TYPE}
    if isinstance(item, Mapping) and isinstance(item.get("Text"), str):
        kind = item.get("Type") or DEFAULT_ENTRY_TYPE
        if not isinstance(kind, str):
            raise ApiError(INVALID_PARAMETER, f"{key} Type must be text.")
        return {"Text": item["Text"].strip(), "Type": kind}
    raise ApiError(INVALID_PARAMETER, f"Each {key} entry needs a Text.")


def display_name(contact: Mapping[str, Any]) -> str:
    """How LACRM names a contact in metadata: the company name, or first-middle-last."""
    if contact["IsCompany"]:
        return contact["Company Name"]
    name = contact["Name"]
    return " ".join(name[part] for part in ("FirstName", "MiddleName", "LastName") if name[part])


def build_contact(fields: Mapping[str, Any], contact_id: str, now: str) -> dict[str, Any]:
    """A contact in GetContact's shape from CreateContact-style fields; raises ApiError."""
    is_company = fields.get("IsCompany", False)
    if not isinstance(is_company, bool):
        raise ApiError(INVALID_PARAMETER, "IsCompany must be true or false.")
    company_name = _text_or_empty(fields, "Company Name")
    if is_company:
        if not company_name:
            raise ApiError(MISSING_PARAMETER, "A company needs a Company Name.")
        name = None
    else:
        name = name_parts(fields.get("Name"))
        if not any(name.values()):
            raise ApiError(MISSING_PARAMETER, "A person needs a Name.")
    created = _text_or_empty(fields, "DateCreated") or now
    return {
        "ContactId": contact_id,
        "IsCompany": is_company,
        "CompanyId": None,
        "Name": name,
        "Company Name": company_name,
        "Email": entry_list(fields.get("Email"), "Email"),
        "Phone": entry_list(fields.get("Phone"), "Phone"),
        "AssignedTo": _text_or_empty(fields, "AssignedTo") or SANDBOX_USER_ID,
        "DateCreated": created,
        "LastUpdate": _text_or_empty(fields, "LastUpdate") or created,
    }


def _search_text(contact: Mapping[str, Any]) -> str:
    # NUL between fields keeps a search term from matching across two fields.
    parts = [contact["Company Name"], *(entry["Text"] for entry in contact["Email"])]
    if contact["Name"]:
        parts.extend(contact["Name"].values())
    return "\x00".join(part for part in parts if part).casefold()


# --- the store ------------------------------------------------------------------------


class Store:
    """All contacts and relationships of one sandbox account, in creation order."""

    def __init__(self, id_seed: int = 0) -> None:
        self.ids = IdGenerator(id_seed)
        self.contacts: dict[str, dict[str, Any]] = {}
        self.relationships: dict[str, Relationship] = {}
        self._search_text: dict[str, str] = {}
        self._company_by_name: dict[str, str] = {}
        self._relationships_by_contact: dict[str, dict[str, None]] = {}

    # contacts

    def add_contact(self, fields: Mapping[str, Any], contact_id: str | None = None) -> str:
        """Create a contact (or company); returns its ContactId."""
        contact = build_contact(fields, contact_id or "", now_iso())
        name_key = contact["Company Name"].casefold()
        if contact["IsCompany"] and name_key in self._company_by_name:
            raise ApiError(COMPANY_EXISTS, f"A company named {contact['Company Name']!r} exists.")
        if contact_id is None:
            contact["ContactId"] = contact_id = self.ids.new()
        else:
            self.ids.reserve(contact_id)
        if contact["IsCompany"]:
            self._company_by_name[name_key] = contact_id
        self.contacts[contact_id] = contact
        self._search_text[contact_id] = _search_text(contact)
        return contact_id

    def contact(self, contact_id: str) -> dict[str, Any]:
        """The contact as GetContact returns it; CompanyId links a person to its company."""
        stored = self._stored_contact(contact_id)
        if stored["IsCompany"] or not stored["Company Name"]:
            return stored
        company_id = self._company_by_name.get(stored["Company Name"].casefold())
        return {**stored, "CompanyId": company_id}

    def _stored_contact(self, contact_id: str) -> dict[str, Any]:
        try:
            return self.contacts[contact_id]
        except KeyError:
            raise ApiError(CONTACT_NOT_FOUND, f"No contact has the id {contact_id}.") from None

    def search_contacts(self, search_terms: str, record_type: str | None) -> list[str]:
        """Ids of contacts whose names, company name or emails contain every search word."""
        words = search_terms.casefold().split()
        want_company = {"Companies": True, "Contacts": False}.get(record_type or "")
        return [
            contact_id
            for contact_id, text in self._search_text.items()
            if all(word in text for word in words)
            and (want_company is None or self.contacts[contact_id]["IsCompany"] is want_company)
        ]

    # relationships

    def add_relationship(
        self, contact_id_1: str, contact_id_2: str, note: str, relationship_id: str | None = None
    ) -> Relationship:
        """Create a relationship; like LACRM, it never refuses a pair that already exists."""
        for contact_id in (contact_id_1, contact_id_2):
            self._stored_contact(contact_id)
        if contact_id_1 == contact_id_2:
            raise ApiError(INVALID_PARAMETER, "A contact cannot be related to itself.")
        if relationship_id is None:
            relationship_id = self.ids.new()
        else:
            self.ids.reserve(relationship_id)
        now = now_iso()
        relationship = Relationship(relationship_id, contact_id_1, contact_id_2, note, now, now)
        self.relationships[relationship_id] = relationship
        for contact_id in (contact_id_1, contact_id_2):
            self._relationships_by_contact.setdefault(contact_id, {})[relationship_id] = None
        return relationship

    def relationship(self, relationship_id: str) -> Relationship:
        try:
            return self.relationships[relationship_id]
        except KeyError:
            raise ApiError(
                RELATIONSHIP_NOT_FOUND, f"No relationship has the id {relationship_id}."
            ) from None

    def edit_relationship(self, relationship_id: str, note: str) -> None:
        relationship = self.relationship(relationship_id)
        relationship.note = note
        relationship.date_edited = now_iso()

    def delete_relationship(self, relationship_id: str) -> None:
        relationship = self.relationship(relationship_id)
        del self.relationships[relationship_id]
        for contact_id in (relationship.contact_id_1, relationship.contact_id_2):
            self._relationships_by_contact[contact_id].pop(relationship_id, None)

    def relationships_of(self, contact_id: str) -> list[Relationship]:
        """The contact's relationships, either side, oldest first."""
        self._stored_contact(contact_id)
        attached = self._relationships_by_contact.get(contact_id, {})
        return [self.relationships[relationship_id] for relationship_id in attached]

    def relationship_view(self, relationship: Relationship) -> dict[str, Any]:
        """The relationship in GetRelationship's shape."""
        contact_1 = self.contacts[relationship.contact_id_1]
        contact_2 = self.contacts[relationship.contact_id_2]
        return {
            "RelationshipId": relationship.relationship_id,
            "ContactId1": relationship.contact_id_1,
            "ContactId2": relationship.contact_id_2,
            "Note": relationship.note,
            "CreatedBy": SANDBOX_USER_ID,
            "DateCreated": relationship.date_created,
            "DateEdited": relationship.date_edited,
            "Contact1MetaData": {"Name": display_name(contact_1)},
            "Contact2MetaData": {"Name": display_name(contact_2)},
            "CreatedByMetaData": dict(SANDBOX_USER),
        }

    def duplicate_pairs(self) -> list[list[Any]]:
        """[[id_lo, id_hi, count], ...] for unordered pairs holding more than one relationship."""
        counts = Counter(relationship.pair for relationship in self.relationships.values())
        return [[lo, hi, count] for (lo, hi), count in sorted(counts.items()) if count > 1]

    def relationship_views(self, relationships: Iterable[Relationship]) -> list[dict[str, Any]]:
        return [self.relationship_view(relationship) for relationship in relationships]
