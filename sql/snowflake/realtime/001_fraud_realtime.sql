-- The real-time fraud path (`paylake stream`, paylake.realtime): every payment committed in PostgreSQL,
-- scored by the champion fraud model a few seconds later, beside the star. Rows are merged by TransactionID
-- (a micro-batch replayed after a crash changes nothing); no PII: ids, amounts, times, the model's answer.

create table if not exists REALTIME_FraudScore (
    TransactionID integer not null,
    TransactionAt timestamp_ntz not null comment 'UTC',
    DateKey integer not null comment 'YYYYMMDD (UTC)',
    CustomerKey integer not null,
    MerchantKey integer not null,
    AmountEUR float not null,
    FraudProbability float not null comment 'calibrated (Platt) probability',
    Decision varchar not null comment 'fraud (at or above the threshold) or legit',
    Threshold float not null,
    ModelName varchar not null,
    ModelVersion varchar not null,
    TopFeatures varchar not null comment 'JSON: the features that weighed most (flagged payments; [] otherwise)',
    CommitLsn varchar not null comment 'PostgreSQL commit LSN of the micro-batch',
    ScoredAt timestamp_ntz not null comment 'UTC',
    constraint PK_REALTIME_FraudScore primary key (TransactionID)
) comment = 'Payments scored by the champion fraud model as they commit (paylake stream).';

create table if not exists REALTIME_FraudAlert (
    TransactionID integer not null,
    TransactionAt timestamp_ntz not null comment 'UTC',
    MerchantKey integer not null,
    AmountEUR float not null,
    FraudProbability float not null,
    Threshold float not null,
    ModelVersion varchar not null,
    RaisedAt timestamp_ntz not null comment 'UTC',
    constraint PK_REALTIME_FraudAlert primary key (TransactionID)
) comment = 'Real-time fraud alerts: payments scored at or above the model threshold (paylake stream).';
