"""The source systems: OLTP schema, document model, data generator."""
