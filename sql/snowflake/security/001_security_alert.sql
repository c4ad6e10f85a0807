-- Security alerts raised by `paylake monitor logs` (paylake.security.alerts), beside FACT_ComplianceAudit.
-- One row per alerted database session, never updated (the lake's gold/security/alert is the source);
-- no PII: the user is a database role, the client address a keyed hash, the evidence log keys without literals.

create table if not exists SECURITY_Alert (
    AlertID varchar not null comment 'hash of the session id: one alert per session',
    SessionID varchar not null,
    DateKey integer not null comment 'YYYYMMDD of the session start (UTC)',
    SessionStartedAt timestamp_ntz,
    DetectedAt timestamp_ntz not null,
    DbUser varchar not null,
    ClientKey varchar comment 'keyed hash of the client address',
    Source varchar not null comment 'model, rules or model+rules',
    Rules varchar comment 'rules that fired, comma-separated',
    Severity varchar not null,
    Score float not null comment 'the model score (0..1)',
    ModelName varchar,
    ModelVersion varchar,
    AnomalousLines integer not null,
    Evidence varchar not null comment 'JSON: anomalous lines (key seen vs expected keys) and rule details',
    constraint PK_SECURITY_Alert primary key (AlertID),
    constraint UQ_SECURITY_Alert_Session unique (SessionID)
) comment = 'Security alerts on database sessions: log-sequence model and rules.';
