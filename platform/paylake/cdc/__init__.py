"""Change data capture: PostgreSQL logical decoding into bronze, in micro-batches.

``decoding`` turns the text of the ``test_decoding`` output plugin into one
Arrow batch per captured table (pure functions, no I/O); ``stream`` reads the
pending changes of a logical replication slot without consuming them, merges
each batch into its bronze table with the commit LSN as the Delta transaction
id, hands new and changed rows to a pluggable sink (fraud scoring), and only
then advances the slot. A crash anywhere replays the same changes, and the
replay is skipped or converges: bronze sees every change exactly once in effect.
"""
