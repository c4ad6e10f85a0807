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
--   t:<E>:<id>      hash  H<hour>n, H<hour>s, D<day>n, D<day>s (+ m / k: distinct merchants / countries)
--   mt:<merchant>   hash  txns, frauds                 (all-time tallies)
--   mc:<merchant>   zset  txid by confirmation time
--   fs:<customer>   hash  d:<device> / c:<country> -> first seen us
--   dim:<kind>:<id> hash  the entity's attributes
-- Times are integer microseconds since the epoch (exact in a double below 2^53).
-- Entities E: c customer, p payment method, d device, m merchant.

local H, D = 3600000000, 86400000000
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

local function tile_fields(t)
  return istr(math.floor(t / H) * H / 1000000), istr(math.floor(t / D) * D / 1000000)
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
  local hour, day = tile_fields(t)
  for _, e in ipairs({{'c', c}, {'p', pm}, {'d', dev}, {'m', m}}) do
    if e[2] ~= '' and redis.call('ZREM', p .. 'r:' .. e[1] .. ':' .. e[2], member) == 1 then
      local tk = p .. 't:' .. e[1] .. ':' .. e[2]
      redis.call('HINCRBY', tk, 'H' .. hour .. 'n', -1)
      redis.call('HINCRBYFLOAT', tk, 'H' .. hour .. 's', '-' .. amount)
      redis.call('HINCRBY', tk, 'D' .. day .. 'n', -1)
      redis.call('HINCRBYFLOAT', tk, 'D' .. day .. 's', '-' .. amount)
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
  local hour, day = tile_fields(t)
  for _, e in ipairs({{'c', c}, {'p', pm}, {'d', dev}, {'m', m}}) do
    if e[2] ~= '' then
      redis.call('ZADD', p .. 'r:' .. e[1] .. ':' .. e[2], t, member)
      local tk = p .. 't:' .. e[1] .. ':' .. e[2]
      redis.call('HINCRBY', tk, 'H' .. hour .. 'n', 1)
      redis.call('HINCRBYFLOAT', tk, 'H' .. hour .. 's', amount)
      redis.call('HINCRBY', tk, 'D' .. day .. 'n', 1)
      redis.call('HINCRBYFLOAT', tk, 'D' .. day .. 's', amount)
      if e[1] == 'p' then
        add_list(tk, 'H' .. hour .. 'm', m); add_list(tk, 'D' .. day .. 'm', m)
        add_list(tk, 'H' .. hour .. 'k', country); add_list(tk, 'D' .. day .. 'k', country)
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

-- the aggregates of [a, b): count, sum, and (want_sets) the distinct merchants and countries
local function window(p, e, id, a, b, want_sets)
  local n, s, ms, ks = 0, 0, {}, {}
  local function raw(x, y)
    if x >= y then return end
    for _, member in ipairs(redis.call('ZRANGEBYSCORE', p .. 'r:' .. e .. ':' .. id, istr(x), '(' .. istr(y))) do
      local _, amount, merchant, country = string.match(member, '^([^|]*)|([^|]*)|([^|]*)|(.*)$')
      n = n + 1; s = s + tonumber(amount)
      if want_sets then ms[merchant] = true; if country ~= '' then ks[country] = true end end
    end
  end
  local tk = p .. 't:' .. e .. ':' .. id
  local function tiles(prefix, step, x, y)
    for at = x, y - step, step do
      local key = prefix .. istr(at / 1000000)
      local v = redis.call('HMGET', tk, key .. 'n', key .. 's', key .. 'm', key .. 'k')
      if v[1] then
        n = n + tonumber(v[1]); s = s + tonumber(v[2])
        if want_sets then
          if v[3] then for x2 in string.gmatch(v[3], '[^,]+') do ms[x2] = true end end
          if v[4] then for x2 in string.gmatch(v[4], '[^,]+') do ks[x2] = true end end
        end
      end
    end
  end
  local ah, bh = math.ceil(a / H) * H, math.floor(b / H) * H
  if ah >= bh then raw(a, b) else
    raw(a, ah); raw(bh, b)
    local ad, bd = math.ceil(ah / D) * D, math.floor(bh / D) * D
    if ad >= bd then tiles('H', H, ah, bh) else
      tiles('H', H, ah, ad); tiles('D', D, ad, bd); tiles('H', H, bd, bh)
    end
  end
  local nm, nk = 0, 0
  for _ in pairs(ms) do nm = nm + 1 end
  for _ in pairs(ks) do nk = nk + 1 end
  return n, s, nm, nk
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
  -- ARGV: 'read', prefix, record ('1'/'0'), windows (comma list of us), median window us, distinct window us, then
  -- per payment: txid, t, customer, merchant, pm, device, location, amount
  local cur = redis.call('GET', root .. 'current')
  if not cur then return redis.error_reply('PAYLAKE no online state published yet') end
  local p = root .. cur .. ':'
  local windows = {}
  for w in string.gmatch(ARGV[4], '[^,]+') do windows[#windows + 1] = tonumber(w) end
  local median_w, distinct_w = tonumber(ARGV[5]), tonumber(ARGV[6])
  local out = {}
  for i = 7, #ARGV, 8 do
    local txid, t, c, m, pm, dev, loc, amount = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2], ARGV[i + 3],
      ARGV[i + 4], ARGV[i + 5], ARGV[i + 6], ARGV[i + 7]
    local seq = ''
    if ARGV[3] == '1' then
      local fresh = 0
      for _, ns in ipairs(generations(true)) do
        fresh = fresh + record(root .. ns .. ':', txid, t, c, m, pm, dev, loc, amount, '', false)
      end
      if fresh > 0 then
        seq = istr(redis.call('INCR', root .. 'seq'))
        redis.call('HSET', p .. 'order', txid, seq)  -- the order scorers recorded in (tests of concurrency)
      end
    end
    local row = {seq}
    for _, e in ipairs({{'c', c}, {'p', pm}, {'d', dev}, {'m', m}}) do
      for _, w in ipairs(windows) do
        if e[2] == '' then row[#row + 1] = ''; row[#row + 1] = '' else
          local n, s = window(p, e[1], e[2], t - w, t, false)
          row[#row + 1] = istr(n); row[#row + 1] = fmt(s)
        end
      end
    end
    local _, _, nm, nk = window(p, 'p', pm, t - distinct_w, t, true)
    row[#row + 1] = istr(nm); row[#row + 1] = istr(nk)
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
