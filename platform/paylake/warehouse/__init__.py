"""The warehouse: the star schema in Snowflake.

``star_ddl`` reads the DDL (``sql/snowflake/``), the one truth of the star's
tables, columns, types and keys, and gives the Arrow schemas the gold Delta
tables must have; ``calendar`` builds ``DIM_Date`` with the public holidays of
the served countries; ``snowflake`` applies the DDL and loads gold tables
(Parquet → PUT → COPY INTO staging → MERGE, one transaction) and reconciles
them; ``queries`` runs the business's OLAP queries (``sql/queries/snowflake/``).
"""
