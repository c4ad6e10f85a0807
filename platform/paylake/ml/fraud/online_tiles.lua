-- The online feature store's tiles (paylake.ml.fraud.online): one script, four entry points chosen by
-- ARGV[1] (ARGV[2] is the key prefix, "pl" unless a test's own world): "record" (payments, idempotent by
-- transaction id), "forget" (payments deleted at the source), "confirm" (fraud confirmations, idempotent by
-- transaction id), "read" (record optionally, then the window aggregates of each payment as of its time).
--
-- Keys of one generation ns live under "<prefix>:<ns>:" (a publish builds the next generation aside and
-- swaps "<prefix>:current"); writes go to every generation in "<prefix>:writers", reads to the current one.
--   seen            hash  txid -> "t|c|m|pm|dev|loc|country|amount"   (payments held: idempotency, undo)
--   gone            hash  txid -> 1                   (payments deleted at the source: forgotten once)
--   order           hash  txid -> n                   (the order in which scorers recorded payments)
--   wrote           hash  txid -> us                  (when the live stream last wrote the payment: a publish
--                                                      replays it only if silver was built before, or lacks it)
--   conf            hash  txid -> confirmed_at us     (confirmations recorded: idempotency)
--   log             zset  "e|..." / "c|..." by time    (what a publish replays into the next generation)
--   r:<E>:<id>      zset  "txid|amount|merchant|country" by time   (raw events, for the partial hours)
--   cz:<E>:<id>     zset  the hours holding events       cu:<E>:<id>  hash  hour -> "count|sum" up to its end
--   t:p:<id>        hash  H<hour>m, H<hour>k           (a payment method's distinct merchants / countries)
--   mt:<merchant>   hash  txns, frauds                 (all-time tallies)
--   mc:<merchant>   zset  txid by confirmation time
--   fs:<customer>   hash  d:<device> / c:<country> -> first seen us
--   dim:<kind>:<id> hash  the entity's attributes
-- Times are integer microseconds since the epoch (exact in a double below 2^53).
-- Entities E: c customer, p payment method, d device, m merchant.

local H = 3600000000  -- an hour in microseconds
local op = ARGV[1]
local root = ARGV[2] .. ':'  -- the store's key prefix (a test's or benchmark's own world)

local function fmt(x) return string.format('%.17g', x) end
local function now_us()
  local t = redis.call('TIME')
  return t[1] .. string.format('%06d', tonumber(t[2]))
end
local function istr(x) return string.format('%d', x) end

local function generations(write)
  if write then
    local ws = redis.call('SMEMBERS', root .. 'writers')
    if #ws > 0 then return ws end
  end
  local cur = redis.call('GET', root .. 'current')
  if not cur then return {} end
  return {cur}
end

local function add_list(key, field, value)
  if value == '' then return end
  local cur = redis.call('HGET', key, field)
  if not cur then redis.call('HSET', key, field, value) return end
  for v in string.gmatch(cur, '[^,]+') do if v == value then return end end
  redis.call('HSET', key, field, cur .. ',' .. value)
end

local function hour_of(t)
  local start = math.floor(t / H) * H
  return start, istr(start / 1000000)
end

-- the hour tiles of an entity are cumulative: "cu" maps each hour holding events to "count|sum" of every
-- event up to the end of that hour, "cz" orders those hours. A window's whole hours are then the difference
-- of two prefixes (two lookups, whatever its length); an event adds to its hour and the hours after it
-- (none, when events arrive in time order).
local function prefix_before(p, e, id, x)
  local pred = redis.call('ZREVRANGEBYSCORE', p .. 'cz:' .. e .. ':' .. id, '(' .. istr(x), '-inf', 'LIMIT', 0, 1)[1]
  if not pred then return 0, 0 end
  local n, sum = string.match(redis.call('HGET', p .. 'cu:' .. e .. ':' .. id, pred), '^([^|]*)|(.*)$')
  return tonumber(n), tonumber(sum)
end

local function add_to_prefixes(p, e, id, t, dn, amount)
  local start, hour = hour_of(t)
  local cz, cu = p .. 'cz:' .. e .. ':' .. id, p .. 'cu:' .. e .. ':' .. id
  if not redis.call('ZSCORE', cz, hour) then
    local n, sum = prefix_before(p, e, id, start)
    redis.call('ZADD', cz, start, hour)
    redis.call('HSET', cu, hour, istr(n) .. '|' .. fmt(sum))
  end
  for _, later in ipairs(redis.call('ZRANGEBYSCORE', cz, istr(start), '+inf')) do
    local n, sum = string.match(redis.call('HGET', cu, later), '^([^|]*)|(.*)$')
    redis.call('HSET', cu, later, istr(tonumber(n) + dn) .. '|' .. fmt(tonumber(sum) + dn * tonumber(amount)))
  end
end

local function log_member(txid, c, m, pm, dev, loc, amount, country)
  return 'e|' .. table.concat({txid, c, m, pm, dev, loc, amount, country}, '|')
end

-- take back what recording the payment ``ev`` (its "seen" value) added: its raw events, its tiles' counts
-- and sums, its merchant's tally, its log entry (the distinct merchants / countries of its payment method's
-- tiles and the first-seen times keep it: a set or a minimum cannot be decremented)
local function undo(p, txid, ev)
  local t, c, m, pm, dev, loc, country, amount =
    string.match(ev, '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|(.*)$')
  t = tonumber(t)
  local member = txid .. '|' .. amount .. '|' .. m .. '|' .. country
  for _, e in ipairs({{'c', c}, {'p', pm}, {'d', dev}, {'m', m}}) do
    if e[2] ~= '' and redis.call('ZREM', p .. 'r:' .. e[1] .. ':' .. e[2], member) == 1 then
      add_to_prefixes(p, e[1], e[2], t, -1, amount)
    end
  end
  redis.call('HINCRBY', p .. 'mt:' .. m, 'txns', -1)
  redis.call('ZREM', p .. 'log', log_member(txid, c, m, pm, dev, loc, amount, country))
  return t
end

-- one payment into generation p ("<prefix>:<ns>:"); fields: txid, t, customer, merchant, pm, device,
-- location, amount (string), country (string, '' = look up the location); bulk = a publish's load (the
-- tally is loaded apart, and what the generation holds is never replaced). A payment already held is
-- replaced when it changed at the source (another time, merchant, amount ...), else left alone.
local function record(p, txid, t, c, m, pm, dev, loc, amount, country, bulk)
  if country == '' and loc ~= '' then country = redis.call('HGET', p .. 'dim:loc:' .. loc, 'country') or '' end
  local payload = table.concat({istr(t), c, m, pm, dev, loc, country, amount}, '|')
  local old = redis.call('HGET', p .. 'seen', txid)
  if old then
    if bulk or old == payload or redis.call('HEXISTS', p .. 'gone', txid) == 1 then return 0 end
    undo(p, txid, old)
  end
  redis.call('HSET', p .. 'seen', txid, payload)
  local member = txid .. '|' .. amount .. '|' .. m .. '|' .. country
  local _, hour = hour_of(t)
  for _, e in ipairs({{'c', c}, {'p', pm}, {'d', dev}, {'m', m}}) do
    if e[2] ~= '' then
      redis.call('ZADD', p .. 'r:' .. e[1] .. ':' .. e[2], t, member)
      add_to_prefixes(p, e[1], e[2], t, 1, amount)
      if e[1] == 'p' then  -- the distinct merchants and countries of each hour (sets: not cumulative)
        local tk = p .. 't:p:' .. e[2]
        add_list(tk, 'H' .. hour .. 'm', m); add_list(tk, 'H' .. hour .. 'k', country)
      end
    end
  end
  if not bulk then
    redis.call('HINCRBY', p .. 'mt:' .. m, 'txns', 1)
    redis.call('HSET', p .. 'wrote', txid, now_us())
  end
  local fs = p .. 'fs:' .. c
  for _, kv in ipairs({{'d:', dev}, {'c:', country}}) do
    if kv[2] ~= '' then
      local first = redis.call('HGET', fs, kv[1] .. kv[2])
      if not first or tonumber(first) > t then redis.call('HSET', fs, kv[1] .. kv[2], istr(t)) end
    end
  end
  redis.call('ZADD', p .. 'log', t, log_member(txid, c, m, pm, dev, loc, amount, country))
  return 1
end

-- a payment deleted at the source: undone once; a payment the generation never held (older than its raw
-- events) is left to the next publish
local function forget(p, txid)
  local ev = redis.call('HGET', p .. 'seen', txid)
  if not ev or redis.call('HSETNX', p .. 'gone', txid, '1') == 0 then return 0 end
  local t = undo(p, txid, ev)
  redis.call('ZADD', p .. 'log', t, 'x|' .. txid)
  redis.call('HSET', p .. 'wrote', txid, now_us())
  return 1
end

local function confirm(p, txid, m, at, bulk)
  local old = redis.call('HGET', p .. 'conf', txid)
  if old and tonumber(old) <= at then return 0 end
  redis.call('HSET', p .. 'conf', txid, istr(at))
  redis.call('ZADD', p .. 'mc:' .. m, at, txid)
  if not old and not bulk then redis.call('HINCRBY', p .. 'mt:' .. m, 'frauds', 1) end
  redis.call('ZADD', p .. 'log', at, 'c|' .. txid .. '|' .. m)
  return 1
end

-- the raw events of [x, y) added into acc = {n, s, ms, ks} (sets only when acc.sets)
local function add_raw(p, e, id, x, y, acc)
  if x >= y then return end
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', p .. 'r:' .. e .. ':' .. id, istr(x), '(' .. istr(y))) do
    local _, amount, merchant, country = string.match(member, '^([^|]*)|([^|]*)|([^|]*)|(.*)$')
    acc.n = acc.n + 1; acc.s = acc.s + tonumber(amount)
    if acc.sets then acc.ms[merchant] = true; if country ~= '' then acc.ks[country] = true end end
  end
end

-- the whole hours of [x, y) (hour boundaries) added into acc: counts and sums from two prefixes, the distinct
-- merchants and countries (acc.sets) from each hour's sets, in one HMGET; ``at_y``: the prefix before y
-- ({count, sum}), which the windows of one entity share
local function add_hours(p, e, id, x, y, acc, at_y)
  if x >= y then return end
  local n1, s1 = unpack(at_y)
  local n0, s0 = prefix_before(p, e, id, x)
  acc.n = acc.n + n1 - n0; acc.s = acc.s + (s1 - s0)
  if not acc.sets then return end
  local fields = {}
  for at = x, y - H, H do
    local key = 'H' .. istr(at / 1000000)
    fields[#fields + 1] = key .. 'm'; fields[#fields + 1] = key .. 'k'
  end
  local v = redis.call('HMGET', p .. 't:' .. e .. ':' .. id, unpack(fields))
  for i = 1, #v, 2 do
    if v[i] then for m in string.gmatch(v[i], '[^,]+') do acc.ms[m] = true end end
    if v[i + 1] then for k in string.gmatch(v[i + 1], '[^,]+') do acc.ks[k] = true end end
  end
end

local function count(set)
  local n = 0
  for _ in pairs(set) do n = n + 1 end
  return n
end

-- the windows [t - w, t) of one entity (w in spans), sharing the events of the current partial hour:
-- each window is the raw events of its first partial hour, its whole hours and days (tiles), and the raw
-- events of [hour of t, t). ``sets_span``: the window that also counts distinct merchants and countries.
-- Returns {{n, s, distinct merchants, distinct countries}, ...} in the order of spans.
local function windows(p, e, id, t, spans, sets_span)
  local bh = math.floor(t / H) * H
  local at_bh = {prefix_before(p, e, id, bh)}  -- every window's whole hours end at bh
  local tail = {n = 0, s = 0, ms = {}, ks = {}, sets = sets_span ~= nil}
  add_raw(p, e, id, math.max(bh, t - spans[#spans]), t, tail)
  local out = {}
  for i, w in ipairs(spans) do
    local a = t - w
    local acc = {n = 0, s = 0, ms = {}, ks = {}, sets = w == sets_span}
    if a >= bh then
      add_raw(p, e, id, a, t, acc)
    else
      local ah = math.ceil(a / H) * H
      add_raw(p, e, id, a, math.min(ah, bh), acc)
      add_hours(p, e, id, ah, bh, acc, at_bh)
      acc.n = acc.n + tail.n; acc.s = acc.s + tail.s
      if acc.sets then
        for m in pairs(tail.ms) do acc.ms[m] = true end
        for k in pairs(tail.ks) do acc.ks[k] = true end
      end
    end
    out[i] = {acc.n, acc.s, count(acc.ms), count(acc.ks)}
  end
  return out
end

local function median(p, c, a, b)
  local values = {}
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', p .. 'r:c:' .. c, istr(a), '(' .. istr(b))) do
    local _, amount = string.match(member, '^([^|]*)|([^|]*)|')
    values[#values + 1] = tonumber(amount)
  end
  if #values == 0 then return '' end
  table.sort(values)
  local mid = math.floor(#values / 2)
  if #values % 2 == 1 then return fmt(values[mid + 1]) end
  return fmt((values[mid] + values[mid + 1]) / 2)
end

if op == 'record' or op == 'confirm' or op == 'forget' then
  -- ARGV[3]: '0' live (every generation in <prefix>:writers), '1' a publish's load into generation ARGV[4]
  -- (the all-time tallies are loaded apart), '2' a publish's replay into ARGV[4]; then the fields, 9 (record) or
  -- 3 (confirm) per item
  local bulk = ARGV[3] == '1'
  local gens = ARGV[3] == '0' and generations(true) or {ARGV[4]}
  local width = (op == 'record' and 9) or (op == 'confirm' and 3) or 1
  local added = 0
  for i = 5, #ARGV, width do
    local fresh = 0  -- new in at least one generation: counted once
    for _, ns in ipairs(gens) do
      local p = root .. ns .. ':'
      if op == 'record' then
        fresh = fresh + record(p, ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2], ARGV[i + 3], ARGV[i + 4],
                               ARGV[i + 5], ARGV[i + 6], ARGV[i + 7], ARGV[i + 8], bulk)
      elseif op == 'confirm' then
        fresh = fresh + confirm(p, ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), bulk)
      else
        fresh = fresh + forget(p, ARGV[i])
      end
    end
    if fresh > 0 then added = added + 1 end
  end
  return added
end

if op == 'read' then
  -- ARGV: 'read', prefix, record ('1'/'0'), windows (comma list of us, shortest first), median window us,
  -- distinct window us, the layout the reader expects, then per payment: txid, t, customer, merchant, pm,
  -- device, location, amount
  local cur = redis.call('GET', root .. 'current')
  if not cur then return redis.error_reply('PAYLAKE no online state published yet') end
  if redis.call('GET', root .. 'layout') ~= ARGV[7] then
    return redis.error_reply('PAYLAKE the online state was published in another key layout')
  end
  local p = root .. cur .. ':'
  local windows_us = {}  -- ascending
  for w in string.gmatch(ARGV[4], '[^,]+') do windows_us[#windows_us + 1] = tonumber(w) end
  local median_w, distinct_w = tonumber(ARGV[5]), tonumber(ARGV[6])  -- ARGV[7]: the layout
  local out = {}
  local gens = ARGV[3] == '1' and generations(true) or {}  -- where recording writes
  for i = 8, #ARGV, 8 do
    local txid, t, c, m, pm, dev, loc, amount = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2], ARGV[i + 3],
      ARGV[i + 4], ARGV[i + 5], ARGV[i + 6], ARGV[i + 7]
    local seq = ''
    if ARGV[3] == '1' then
      local fresh = 0
      for _, ns in ipairs(gens) do
        fresh = fresh + record(root .. ns .. ':', txid, t, c, m, pm, dev, loc, amount, '', false)
      end
      if fresh > 0 then
        seq = istr(redis.call('INCR', root .. 'seq'))
        redis.call('HSET', p .. 'order', txid, seq)  -- the order scorers recorded in (tests of concurrency)
      end
    end
    local row = {seq}
    local distinct = {0, 0}
    for _, e in ipairs({{'c', c}, {'p', pm}, {'d', dev}, {'m', m}}) do
      if e[2] == '' then
        for _ = 1, #windows_us do row[#row + 1] = ''; row[#row + 1] = '' end
      else
        local res = windows(p, e[1], e[2], t, windows_us, e[1] == 'p' and distinct_w or nil)
        for i, w in ipairs(windows_us) do
          row[#row + 1] = istr(res[i][1]); row[#row + 1] = fmt(res[i][2])
          if e[1] == 'p' and w == distinct_w then distinct = {res[i][3], res[i][4]} end
        end
      end
    end
    row[#row + 1] = istr(distinct[1]); row[#row + 1] = istr(distinct[2])
    row[#row + 1] = median(p, c, t - median_w, t)
    local tally = redis.call('HMGET', p .. 'mt:' .. m, 'txns', 'frauds')
    local later_txns = redis.call('ZCOUNT', p .. 'r:m:' .. m, istr(t), '+inf')
    local later_frauds = redis.call('ZCOUNT', p .. 'mc:' .. m, istr(t), '+inf')
    row[#row + 1] = istr((tonumber(tally[1]) or 0) - later_txns)
    row[#row + 1] = istr((tonumber(tally[2]) or 0) - later_frauds)
    local l = loc ~= '' and redis.call('HMGET', p .. 'dim:loc:' .. loc, 'country', 'latitude', 'longitude') or {}
    local country = l[1] or ''
    local fs = redis.call('HMGET', p .. 'fs:' .. c, 'd:' .. dev, 'c:' .. country)
    row[#row + 1] = (dev ~= '' and fs[1]) or ''
    row[#row + 1] = (country ~= '' and fs[2]) or ''
    local cu = redis.call('HMGET', p .. 'dim:customer:' .. c, 'segment', 'signupdate', 'country', 'home_lat',
                          'home_lon')
    local me = redis.call('HMGET', p .. 'dim:merchant:' .. m, 'industry', 'size')
    local pt = redis.call('HGET', p .. 'dim:pm:' .. pm, 'type')
    local dims = {cu[1], cu[2], cu[3], cu[4], cu[5], me[1], me[2], pt, l[1], l[2], l[3]}
    for k = 1, 11 do row[#row + 1] = dims[k] or '\0' end  -- a missing attribute: '\0' (the table has holes)
    row[#row + 1] = redis.call('EXISTS', p .. 'dim:customer:' .. c) == 1 and '1' or '0'
    row[#row + 1] = redis.call('EXISTS', p .. 'dim:merchant:' .. m) == 1 and '1' or '0'
    row[#row + 1] = redis.call('EXISTS', p .. 'dim:pm:' .. pm) == 1 and '1' or '0'
    row[#row + 1] = (loc ~= '' and redis.call('EXISTS', p .. 'dim:loc:' .. loc) == 1) and '1' or '0'
    out[#out + 1] = row
  end
  return out
end

return redis.error_reply('PAYLAKE unknown operation ' .. tostring(op))
