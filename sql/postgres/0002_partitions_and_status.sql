-- Monthly partitions of oltp.Transaction, created ahead of time.
-- Bounds are UTC months whatever the caller's TimeZone.
create or replace function oltp.create_transaction_partitions(first_month date, months integer)
returns integer language plpgsql set timezone = 'UTC' as $$
declare
    month_start date := date_trunc('month', first_month)::date;
    created integer := 0;
    name text;
begin
    for i in 0 .. months - 1 loop
        name := format('transaction_%s', to_char(month_start, 'YYYY_MM'));
        if to_regclass('oltp.' || name) is null then
            execute format(
                'create table oltp.%I partition of oltp.Transaction for values from (%L) to (%L)',
                name, month_start::timestamptz, (month_start + interval '1 month')::timestamptz);
            created := created + 1;
        end if;
        month_start := (month_start + interval '1 month')::date;
    end loop;
    return created;
end $$;

-- The one way to change a transaction's status: the update and its audit row
-- commit together or not at all (any failure rolls back both).
create or replace function oltp.change_transaction_status(
    p_transaction_id bigint, p_datetime timestamptz, p_to_status text, p_reason text, p_changed_by text,
    p_changed_at timestamptz default null)
returns smallint language plpgsql as $$
declare
    v_from smallint;
    v_to smallint;
begin
    select StatusID into v_to from oltp.TransactionStatus where Name = p_to_status;
    if v_to is null then
        raise exception 'unknown transaction status %', p_to_status using errcode = '22023';
    end if;
    update oltp.Transaction t set StatusID = v_to
      from (select StatusID from oltp.Transaction
             where TransactionID = p_transaction_id and DateTime = p_datetime for update) old
     where t.TransactionID = p_transaction_id and t.DateTime = p_datetime
    returning old.StatusID into v_from;
    if v_from is null then
        raise exception 'transaction % at % does not exist', p_transaction_id, p_datetime using errcode = 'P0002';
    end if;
    insert into oltp.TransactionStateChanges
        (TransactionID, TransactionDateTime, FromStatusID, ToStatusID, Reason, ChangedBy, ChangedAt)
    values (p_transaction_id, p_datetime, v_from, v_to, p_reason, p_changed_by, coalesce(p_changed_at, clock_timestamp()));
    return v_from;
end $$;
