"""Seed files: the contacts and relationships a sandbox starts with.

A seed file is JSON in the API's own shapes::

    {
      "contacts": [
        {"ContactId": "4006276277128630492722513572984",      # optional, 31-digit string
         "IsCompany": false,
         "Name": {"FirstName": "John", "LastName": "Doe"},     # or "John Doe"
         "Company Name": "Acme Ltd",
         "Email": [{"Text": "john@example.com", "Type": "Work"}],
         "Phone": [{"Text": "555-0100", "Type": "Work"}]},
        {"IsCompany": true, "Company Name": "Acme Ltd"}
      ],
      "relationships": [
        {"ContactId1": "4006276277128630492722513572984",
         "ContactId2": "4006276277130936335731728609578",
         "Note": "Married", "RelationshipId": "..."}              # RelationshipId optional
      ]
    }

Both lists are optional. Ids left out are drawn from an RNG seeded with `id_seed`, after the
given ids are reserved, so the same file always yields the same ids. A relationship names its
contacts by id, so contacts that relationships use need an explicit ContactId. Contacts may
also carry AssignedTo, DateCreated and LastUpdate; any other key is refused as a likely typo.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from etl.sandbox.errors import ApiError
from etl.sandbox.store import Store, is_uid

CONTACT_KEYS = frozenset(
    {"ContactId", "IsCompany", "CompanyId", "Name", "Company Name", "Email", "Phone"}
    | {"AssignedTo", "DateCreated", "LastUpdate"}
)
RELATIONSHIP_KEYS = frozenset({"ContactId1", "ContactId2", "Note", "RelationshipId"})


class SeedError(ValueError):
    """A seed file that cannot be loaded; the message names the entry and the fix."""


def load_seed_file(path: Path, id_seed: int = 0) -> Store:
    """Read a seed file into a new Store."""
    try:
        seed = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SeedError(f"Cannot read the seed file {path}: {error}") from error
    return load_seed(seed, id_seed)


def load_seed(seed: object, id_seed: int = 0) -> Store:
    """Build a Store from a seed object (the parsed JSON of a seed file)."""
    if not isinstance(seed, Mapping) or set(seed) - {"contacts", "relationships"}:
        raise SeedError('A seed is a JSON object with the keys "contacts" and "relationships".')
    contacts = _entries(seed, "contacts", CONTACT_KEYS)
    relationships = _entries(seed, "relationships", RELATIONSHIP_KEYS)
    store = Store(id_seed)
    _announce_given_ids(store, contacts, "contacts", "ContactId")
    _announce_given_ids(store, relationships, "relationships", "RelationshipId")
    for index, contact in enumerate(contacts):
        _add(lambda c=contact: _add_contact(store, c), "contacts", index)
    for index, relationship in enumerate(relationships):
        _add(lambda r=relationship: _add_relationship(store, r), "relationships", index)
    return store


def _entries(seed: Mapping[str, Any], key: str, allowed: frozenset[str]) -> list[dict[str, Any]]:
    entries = seed.get(key, [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise SeedError(f'"{key}" must be a list of objects.')
    for index, entry in enumerate(entries):
        unknown = sorted(set(entry) - allowed)
        if unknown:
            raise SeedError(
                f"{key}[{index}] has unknown keys {unknown}; allowed: {sorted(allowed)}."
            )
    return entries


def _announce_given_ids(store: Store, entries: list[dict[str, Any]], key: str, id_key: str) -> None:
    for index, entry in enumerate(entries):
        if id_key in entry:
            if not is_uid(entry[id_key]):
                raise SeedError(f"{key}[{index}]: {id_key} must be a 31-digit string.")
            store.ids.announce(entry[id_key])


def _add_contact(store: Store, contact: dict[str, Any]) -> None:
    fields = {key: value for key, value in contact.items() if key not in {"ContactId", "CompanyId"}}
    store.add_contact(fields, contact.get("ContactId"))


def _add_relationship(store: Store, relationship: dict[str, Any]) -> None:
    for key in ("ContactId1", "ContactId2"):
        if not is_uid(relationship.get(key)):
            raise SeedError(f"{key} must be the 31-digit string id of a seeded contact.")
    note = relationship.get("Note") or ""
    if not isinstance(note, str):
        raise SeedError("Note must be text.")
    store.add_relationship(
        relationship["ContactId1"],
        relationship["ContactId2"],
        note,
        relationship.get("RelationshipId"),
    )


def _add(action: Callable[[], object], key: str, index: int) -> None:
    try:
        action()
    except (ApiError, SeedError) as error:
        detail = error.description if isinstance(error, ApiError) else str(error)
        raise SeedError(f"{key}[{index}]: {detail}") from None
