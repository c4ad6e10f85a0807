-- The online feature store left the OLTP database for its own server (Redis: paylake.ml.fraud.online): its
-- publishes flooded the CDC slot with WAL and its locks held scoring. Drop what earlier versions left here.
drop schema if exists feature_store cascade;
