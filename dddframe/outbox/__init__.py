"""The transactional outbox: tables, row mapping, gap-free sequencing and ordered reads."""

from dddframe.outbox.reader import OutboxReader, PositionStore
from dddframe.outbox.records import envelope_to_row, row_to_envelope
from dddframe.outbox.sequencer import Sequencer
from dddframe.outbox.tables import framework_metadata, outbox_table

__all__ = [
    "OutboxReader",
    "PositionStore",
    "Sequencer",
    "envelope_to_row",
    "framework_metadata",
    "outbox_table",
    "row_to_envelope",
]
