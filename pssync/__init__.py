"""pssync: keeps a professional-services firm's CRM, PSA, HR and ERP in step.

Change streams in (Avro CDC), joined truth in RocksDB-backed state, and out:
ERP commands, drift alerts, exceptions for a human, and golden records.
"""

__version__ = "0.1.0"
