-- PII keys, roles with least privilege, the append-only platform audit.

-- The PII keys live in a schema only the admin role can enter; they are loaded
-- from settings by 'paylake db migrate', never written in code or migrations.
create schema if not exists pii;
create table if not exists pii.Keyring (
    Name text primary key check (Name in ('pii', 'hmac')),
    KeyValue text not null,
    RotatedAt timestamptz not null default now()
);

create or replace function pii.encrypt(clear text) returns bytea
language sql volatile security definer set search_path = pg_catalog, crypto, pii as $$
    select crypto.pgp_sym_encrypt(clear, (select KeyValue from pii.Keyring where Name = 'pii'), 'cipher-algo=aes256, s2k-mode=1')
$$;

create or replace function pii.decrypt(secret bytea) returns text
language sql stable security definer set search_path = pg_catalog, crypto, pii as $$
    select crypto.pgp_sym_decrypt(secret, (select KeyValue from pii.Keyring where Name = 'pii'))
$$;

create or replace function pii.lookup_hash(clear text) returns text
language sql stable security definer set search_path = pg_catalog, crypto, pii as $$
    select encode(crypto.hmac(lower(clear), (select KeyValue from pii.Keyring where Name = 'hmac'), 'sha256'), 'hex')
$$;

create or replace function pii.hash_password(clear text, cost integer default 8) returns text
language sql volatile security definer set search_path = pg_catalog, crypto as $$
    select crypto.crypt(clear, crypto.gen_salt('bf', cost))
$$;

create or replace function pii.check_password(clear text, hashed text) returns boolean
language sql stable security definer set search_path = pg_catalog, crypto as $$
    select crypto.crypt(clear, hashed) = hashed
$$;

-- Roles: group roles (NOLOGIN); people and services log in as members.
do $$
begin
    if not exists (select 1 from pg_roles where rolname = 'paylake_developer') then
        create role paylake_developer nologin;
    end if;
    if not exists (select 1 from pg_roles where rolname = 'paylake_readonly') then
        create role paylake_readonly nologin;
    end if;
end $$;

revoke all on schema pii, crypto from public;
revoke all on all functions in schema pii from public;
revoke all on all tables in schema pii from public;
revoke all on schema oltp from public;

-- developer: DML on the OLTP tables, may write PII encrypted, may not decrypt nor read the keys.
grant usage on schema oltp to paylake_developer, paylake_readonly;
grant select, insert, update, delete on all tables in schema oltp to paylake_developer;
-- A status changes only through oltp.change_transaction_status (which writes the audit row).
revoke update on oltp.Transaction from paylake_developer;
grant update (DateTime, CustomerID, MerchantID, PaymentMethodID, DeviceID, LocationID, ProductID, CurrencyCode,
              Amount, TaxAmount, FeeAmount) on oltp.Transaction to paylake_developer;
grant usage on all sequences in schema oltp to paylake_developer;
grant execute on all functions in schema oltp to paylake_developer;
grant usage on schema pii to paylake_developer;
grant execute on function pii.encrypt(text), pii.lookup_hash(text), pii.hash_password(text, integer),
    pii.check_password(text, text) to paylake_developer;
-- readonly: SELECT only.
grant select on all tables in schema oltp to paylake_readonly;
revoke execute on function oltp.change_transaction_status(bigint, timestamptz, text, text, text, timestamptz),
    oltp.create_transaction_partitions(date, integer) from public, paylake_readonly;

alter default privileges in schema oltp grant select, insert, update, delete on tables to paylake_developer;
alter default privileges in schema oltp grant select on tables to paylake_readonly;

-- Time-boxed access for contractors: a login role that expires by itself. The
-- password is passed as its SCRAM verifier: every statement is logged.
create or replace function oltp.grant_contractor(p_name text, p_password text, p_group text, p_valid_until timestamptz)
returns void language plpgsql as $$
declare
    v_role oid := (select oid from pg_roles where rolname = p_name);
begin
    if p_group not in ('paylake_developer', 'paylake_readonly') then
        raise exception 'contractors may join paylake_developer or paylake_readonly, not %', p_group
            using errcode = '42501';
    end if;
    if p_valid_until > now() + interval '90 days' then
        raise exception 'contractor access is limited to 90 days' using errcode = '22023';
    end if;
    if p_password !~ '^SCRAM-SHA-256\$' then
        raise exception 'pass the SCRAM verifier of the password, never the password: every statement is logged'
            using errcode = '22023';
    end if;
    if v_role is null then
        execute format('create role %I with login password %L valid until %L in role %I',
                       p_name, p_password, p_valid_until, p_group);
        return;
    end if;
    if not exists (select 1 from pg_auth_members m where m.member = v_role and m.roleid in
                   (select oid from pg_roles where rolname in ('paylake_developer', 'paylake_readonly'))) then
        raise exception 'role % exists and is not a contractor: choose another name', p_name using errcode = '42501';
    end if;
    execute format('alter role %I with login password %L valid until %L', p_name, p_password, p_valid_until);
    execute format('revoke %I from %I', case p_group when 'paylake_developer' then 'paylake_readonly'
                                             else 'paylake_developer' end, p_name);
    execute format('grant %I to %I', p_group, p_name);
end $$;
revoke execute on function oltp.grant_contractor(text, text, text, timestamptz) from public, paylake_developer;

-- Platform-level audit: append-only.
create table oltp.AuditLog (
    AuditID bigint generated always as identity primary key,
    At timestamptz not null default clock_timestamp(),
    Actor text not null default current_user,
    Action text not null,
    Object text not null,
    Details jsonb not null default '{}'
);
create or replace function oltp.reject_audit_change() returns trigger
language plpgsql as $$
begin
    raise exception 'oltp.AuditLog is append-only: % is not allowed', tg_op using errcode = '42501';
end $$;
create trigger audit_append_only before update or delete on oltp.AuditLog
    for each row execute function oltp.reject_audit_change();
create trigger audit_no_truncate before truncate on oltp.AuditLog
    for each statement execute function oltp.reject_audit_change();
revoke update, delete, truncate on oltp.AuditLog from paylake_developer;
grant select, insert on oltp.AuditLog to paylake_developer;
grant select on oltp.AuditLog to paylake_readonly;

-- Logical replication of the transactional tables, for change data capture.
create publication paylake_cdc for table
    oltp.Customer, oltp.Address, oltp.Merchant, oltp.Device, oltp.PaymentMethod, oltp.Product,
    oltp.Location, oltp.Currency, oltp.Transaction, oltp.TransactionStateChanges
    with (publish_via_partition_root = true);
