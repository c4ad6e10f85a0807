-- Rules judge a database session by the rights in force when it ran, not now: every change a contractor's
-- access goes through (creation, a new validity, a new group) is recorded in the append-only audit log,
-- so paylake.security.rules can tell which VALID UNTIL held at a session's start after it was extended.
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
    else
        if not exists (select 1 from pg_auth_members m where m.member = v_role and m.roleid in
                       (select oid from pg_roles where rolname in ('paylake_developer', 'paylake_readonly'))) then
            raise exception 'role % exists and is not a contractor: choose another name', p_name
                using errcode = '42501';
        end if;
        execute format('alter role %I with login password %L valid until %L', p_name, p_password, p_valid_until);
        execute format('revoke %I from %I', case p_group when 'paylake_developer' then 'paylake_readonly'
                                                 else 'paylake_developer' end, p_name);
        execute format('grant %I to %I', p_group, p_name);
    end if;
    insert into oltp.AuditLog (Action, Object, Details)
    values ('role.contractor', p_name, jsonb_build_object('valid_until', p_valid_until, 'group', p_group));
end $$;
revoke execute on function oltp.grant_contractor(text, text, text, timestamptz) from public, paylake_developer;
