"""The test kit shipped to z8 users.

- :class:`JournalConformance`: the journal contract as a pytest suite; subclass it to
  check your own ``Journal`` backend.
- :func:`tamper`, :func:`flip_byte`, :func:`stored_record`: reach under the contract to
  prove ``verify()`` catches what an attacker with file access could do.
- pytest fixtures (registered automatically when z8 is installed): ``z8_journal`` (an
  LMDB journal in ``tmp_path``) and ``z8_memory_journal``.
"""

from ._conformance import Deposited, JournalConformance, Opened, Withdrawn, conformance_types
from ._journal_kit import flip_byte, reseal, stored_record, tamper

__all__ = [
    "JournalConformance",
    "Opened",
    "Deposited",
    "Withdrawn",
    "conformance_types",
    "flip_byte",
    "reseal",
    "stored_record",
    "tamper",
]
