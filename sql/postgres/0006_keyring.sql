-- Envelope encryption (paylake.security.keys): wrapped data keys, per-customer keys, rotations, operators.
--
-- The keyring schema belongs to the application owner; no data role (developer, read-only, contractors) has
-- any right on it: reading a wrapped key is the first half of decrypting, the KMS's key policy the second.
-- PII is sealed by paylake (AES-256-GCM) before it reaches the server; pgcrypto's single key retires.
create schema if not exists keyring;
revoke all on schema keyring from public;

create table keyring.DataKey (
    KeyName text not null,                        -- "<store>/<table>"
    Version integer not null check (Version > 0),
    Store text not null,
    TableName text not null,
    Purpose text not null check (Purpose in ('encrypt', 'hmac')),
    Wrapped bytea not null,                       -- the KMS's ciphertext of the key: never the key
    MasterKeyArn text not null,
    State text not null default 'active' check (State in ('active', 'retired')),
    CreatedAt timestamptz not null default now(),
    WrappedAt timestamptz not null default now(),
    primary key (KeyName, Version)
);

-- One key per customer for their PII, sealed by the data key postgres/oltp.customer. Wrapped is null once
-- destroyed: every copy of that person's PII is then unreadable (crypto-shredding).
create table keyring.SubjectKey (
    CustomerID bigint primary key,
    TableKeyVersion integer not null,
    Wrapped bytea,
    CreatedAt timestamptz not null default now(),
    DestroyedAt timestamptz,
    check ((Wrapped is null) = (DestroyedAt is not null))
);

-- Re-encryption jobs: the cursor commits with each batch, a stopped job resumes from it.
create table keyring.ReencryptJob (
    JobID bigint generated always as identity primary key,
    KeyName text not null,
    ToVersion integer not null,
    Cursor bigint not null default -1,
    Rows bigint not null default 0,
    Actor text not null,
    StartedAt timestamptz not null default now(),
    FinishedAt timestamptz
);
create unique index reencrypt_one_open_job on keyring.ReencryptJob (KeyName) where FinishedAt is null;

-- Operators of sensitive commands and their TOTP secrets, sealed by the data key security/operators.
create table keyring.Operator (
    OperatorID bigint generated always as identity primary key,
    Name text not null unique check (Name ~ '^[a-z][a-z0-9_.-]{1,62}$'),
    KeyVersion integer not null,
    SecretSealed bytea not null,
    LastStep bigint not null default 0,           -- the last TOTP time step accepted: a code works once
    EnrolledAt timestamptz not null default now(),
    DisabledAt timestamptz
);

-- What happened to keys (append-only, like oltp.AuditLog).
create table keyring.Event (
    EventID bigint generated always as identity primary key,
    At timestamptz not null default clock_timestamp(),
    Actor text not null,
    Action text not null,
    KeyName text not null,
    Details jsonb not null default '{}'
);
create trigger keyring_event_append_only before update or delete on keyring.Event
    for each row execute function oltp.reject_audit_change();

revoke all on all tables in schema keyring from public, paylake_developer, paylake_readonly;

-- The server no longer encrypts: a developer's application seals PII with paylake.security.keys.
revoke execute on function pii.encrypt(text), pii.lookup_hash(text) from paylake_developer;
