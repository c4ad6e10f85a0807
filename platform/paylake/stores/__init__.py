"""One connection factory per store. Stores know nothing of extraction,
transformation or the warehouse model."""
