"""Extraction of the source systems into bronze Delta tables.

A source is a small class with one job: plan its partitions (cheap catalog and
index-bound queries on the driver) and read one partition into Arrow (a Ray
task). ``run.extract`` composes them: parallel reads, contract checks with
quarantine, exactly-once commits with the cursor state in the Delta log.
"""
