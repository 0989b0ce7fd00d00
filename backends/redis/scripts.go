package redis

import goredis "github.com/redis/go-redis/v9"

// The Lua scripts that change more than one key, so that each change is atomic. Every key
// a script touches starts with the namespace's prefix "{NAMESPACE}:", passed as ARGV[1] or
// in KEYS, so that all of them hash to one Redis Cluster slot; KEYS[1] routes the call.
//
// The keys, after the prefix, are listed under Key layout in doc.go.
//
// A message is a stream entry whose fields codec.go lists. A message in flight is pending
// in the group, owned by the consumer that received it; acknowledged, it leaves the
// group's pending list, and scriptTake trims it off the stream once no older message is
// pending (with XTRIM MINID ~, which is far cheaper than XDEL per message).
// A requeued message is handed to the consumer "~released", which readers take from
// first, oldest first, and a nudge entry (field carrot=nudge) wakes blocked readers.
// Errors a script raises start with NOTFOUND, MISMATCH, INVALID or STALE, which ErrorCode
// reads.

// Lua helpers shared by the scripts.
const luaHelpers = `
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function field(f, name)
  for i = 1, #f, 2 do if f[i] == name then return f[i + 1] end end
  return nil
end
local function owner(s, id)
  local p = redis.call('XPENDING', s, 'carrot', id, id, 1)
  if p[1] then return p[1][2], p[1][4] end
  return nil, 0
end
local function lease(k, id, ms)
  local now = now_ms()
  redis.call('ZREMRANGEBYSCORE', k, '-inf', now)
  redis.call('ZADD', k, now + tonumber(ms), id)
end
`

// scriptInit creates the namespace's version and the exchanges RabbitMQ has from the
// start, and gives the connection a lease in connections. KEYS[1] version, KEYS[2]
// connections; ARGV prefix, the connection's id, the lease (ms).
var scriptInit = goredis.NewScript(luaHelpers + `
local p = ARGV[1]
redis.call('SETNX', KEYS[1], '1')
lease(KEYS[2], ARGV[2], ARGV[3])
local made = false
for _, x in ipairs({{'amq.direct', 'direct'}, {'amq.fanout', 'fanout'}, {'amq.topic', 'topic'}}) do
  if redis.call('EXISTS', p .. 'x:' .. x[1]) == 0 then
    redis.call('HSET', p .. 'x:' .. x[1], 'kind', x[2], 'durable', '1')
    redis.call('SADD', p .. 'exchanges', x[1])
    made = true
  end
end
if made then redis.call('INCR', KEYS[1]) end
return 'OK'
`)

// scriptBeat renews a connection's lease in connections, and drops the leases that ended,
// if the namespace's version is there; if it is gone, Redis lost the namespace's data, and
// it answers LOST. KEYS[1] version, KEYS[2] connections; ARGV the connection's id, the
// lease (ms).
var scriptBeat = goredis.NewScript(luaHelpers + `
if redis.call('EXISTS', KEYS[1]) == 0 then return 'LOST' end
lease(KEYS[2], ARGV[1], ARGV[2])
return 'OK'
`)

// scriptDropNamespace deletes the namespace's version, the first key DeleteNamespace
// deletes, unless a connection has a lease in connections that has not ended. It returns
// the number of such connections, and of keys it deleted. KEYS[1] version, KEYS[2]
// connections.
var scriptDropNamespace = goredis.NewScript(luaHelpers + `
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now_ms())
local open = redis.call('ZCARD', KEYS[2])
if open > 0 then return {open, 0} end
return {0, redis.call('DEL', KEYS[1])}
`)

// scriptDeclareExchange: KEYS[1] version; ARGV prefix, name, kind, durable, passive.
var scriptDeclareExchange = goredis.NewScript(`
local p, name, kind, durable, passive = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5] == '1'
local k = p .. 'x:' .. name
if redis.call('EXISTS', k) == 1 then
  if passive then return 'OK' end
  local cur = redis.call('HMGET', k, 'kind', 'durable')
  if cur[1] ~= kind or cur[2] ~= durable then
    return redis.error_reply('MISMATCH exchange "' .. name .. '" exists as a ' .. cur[1] .. ' exchange, durable ' .. cur[2])
  end
  return 'OK'
end
if passive then return redis.error_reply('NOTFOUND exchange "' .. name .. '" not found') end
redis.call('HSET', k, 'kind', kind, 'durable', durable)
redis.call('SADD', p .. 'exchanges', name)
redis.call('INCR', KEYS[1])
return 'OK'
`)

// scriptDeleteExchange: KEYS[1] version; ARGV prefix, name.
var scriptDeleteExchange = goredis.NewScript(`
local p, name = ARGV[1], ARGV[2]
if string.sub(name, 1, 4) == 'amq.' then return redis.error_reply('INVALID exchange "' .. name .. '" is built in') end
if redis.call('EXISTS', p .. 'x:' .. name) == 0 then return 'OK' end
for _, f in ipairs(redis.call('HKEYS', p .. 'b:' .. name)) do
  local z = string.find(f, '\0', 1, true)
  redis.call('SREM', p .. 'qb:' .. string.sub(f, 1, z - 1), name .. '\0' .. string.sub(f, z + 1))
end
redis.call('DEL', p .. 'x:' .. name, p .. 'b:' .. name)
redis.call('SREM', p .. 'exchanges', name)
redis.call('INCR', KEYS[1])
return 'OK'
`)

// scriptDeclareQueue: KEYS[1] version; ARGV prefix, name, durable, ttl, dlx, dlk, passive.
var scriptDeclareQueue = goredis.NewScript(`
local p, name, durable, ttl, dlx, dlk, passive = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7] == '1'
local k = p .. 'q:' .. name
if redis.call('EXISTS', k) == 1 then
  if passive then return 'OK' end
  local cur = redis.call('HMGET', k, 'durable', 'ttl', 'dlx', 'dlk')
  if cur[1] ~= durable or cur[2] ~= ttl or cur[3] ~= dlx or cur[4] ~= dlk then
    return redis.error_reply('MISMATCH queue "' .. name .. '" exists with other properties')
  end
  return 'OK'
end
if passive then return redis.error_reply('NOTFOUND queue "' .. name .. '" not found') end
redis.call('HSET', k, 'durable', durable, 'ttl', ttl, 'dlx', dlx, 'dlk', dlk)
redis.call('SADD', p .. 'queues', name)
local s = p .. 's:' .. name
redis.call('DEL', s)
redis.call('XGROUP', 'CREATE', s, 'carrot', '0', 'MKSTREAM')
redis.call('INCR', KEYS[1])
return 'OK'
`)

// scriptDeleteQueue: KEYS[1] version; ARGV prefix, name.
var scriptDeleteQueue = goredis.NewScript(`
local p, name = ARGV[1], ARGV[2]
if redis.call('EXISTS', p .. 'q:' .. name) == 0 then return 'OK' end
for _, m in ipairs(redis.call('SMEMBERS', p .. 'qb:' .. name)) do
  local z = string.find(m, '\0', 1, true)
  redis.call('HDEL', p .. 'b:' .. string.sub(m, 1, z - 1), name .. '\0' .. string.sub(m, z + 1))
end
redis.call('DEL', p .. 'q:' .. name, p .. 'qb:' .. name, p .. 's:' .. name)
redis.call('SREM', p .. 'queues', name)
redis.call('INCR', KEYS[1])
return 'OK'
`)

// scriptBind: KEYS[1] version; ARGV prefix, exchange, queue, key, bind ('1') or unbind.
var scriptBind = goredis.NewScript(`
local p, x, q, key, bind = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5] == '1'
if bind then
  if redis.call('EXISTS', p .. 'x:' .. x) == 0 then return redis.error_reply('NOTFOUND exchange "' .. x .. '" not found') end
  if redis.call('EXISTS', p .. 'q:' .. q) == 0 then return redis.error_reply('NOTFOUND queue "' .. q .. '" not found') end
  if redis.call('HSET', p .. 'b:' .. x, q .. '\0' .. key, '1') == 1 then
    redis.call('SADD', p .. 'qb:' .. q, x .. '\0' .. key)
    redis.call('INCR', KEYS[1])
  end
elseif redis.call('HDEL', p .. 'b:' .. x, q .. '\0' .. key) == 1 then
  redis.call('SREM', p .. 'qb:' .. q, x .. '\0' .. key)
  redis.call('INCR', KEYS[1])
end
return 'OK'
`)

// scriptLoad returns the whole topology and its version. KEYS[1] version; ARGV prefix.
var scriptLoad = goredis.NewScript(`
local p = ARGV[1]
local out = {redis.call('GET', KEYS[1]) or '0', {}, {}}
for _, x in ipairs(redis.call('SMEMBERS', p .. 'exchanges')) do
  local d = redis.call('HMGET', p .. 'x:' .. x, 'kind', 'durable')
  table.insert(out[2], {x, d[1] or 'direct', d[2] or '1', redis.call('HKEYS', p .. 'b:' .. x)})
end
for _, q in ipairs(redis.call('SMEMBERS', p .. 'queues')) do
  local d = redis.call('HMGET', p .. 'q:' .. q, 'durable', 'ttl', 'dlx', 'dlk')
  table.insert(out[3], {q, d[1] or '1', d[2] or '0', d[3] or '', d[4] or ''})
end
return out
`)

// scriptTake hands a consumer up to ARGV count messages: requeued ones first, oldest
// first, then those of consumers that stopped answering, then new ones if asked. It returns the
// cursor for the next search of abandoned messages and the messages, each as {id, fields,
// delivery count, expired}. Nudges are removed on the way. With noack the messages leave
// the queue at once, and expired ones are dropped.
// A namespace whose version is gone was lost (Redis restarted without persistence): the
// script says LOST, and the connection ends so that carrot declares the topology again.
// Unless noack, the ids taken are recorded under the take's token in the consumer's takes
// hash, so that a take whose caller stopped waiting can be undone (scriptAbandon); a take
// already abandoned takes nothing. The tokens of takes whose answer came are forgotten.
// KEYS[1] stream, KEYS[2] queue, KEYS[3] version, KEYS[4] takes; ARGV consumer, count,
// visibility (ms), noack, cursor, "1" to take new messages too (consumers read those with
// XREADGROUP), the token, and the tokens to forget.
var scriptTake = goredis.NewScript(luaHelpers + `
local s = KEYS[1]
local consumer, want, vis, noack = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4] == '1'
if redis.call('EXISTS', KEYS[3]) == 0 then return redis.error_reply('LOST the namespace is gone') end
if redis.call('EXISTS', KEYS[2]) == 0 then return redis.error_reply('NOTFOUND queue not found') end
local takes, token = KEYS[4], ARGV[7]
for i = 8, #ARGV do redis.call('HDEL', takes, ARGV[i]) end
if redis.call('HGET', takes, token) == 'abandoned' then
  redis.call('HDEL', takes, token)
  return {ARGV[5], {}}
end
-- Trim the acknowledged messages: those older than every pending one and not newer than
-- the last delivered. Approximately (~), so that Redis drops whole nodes, cheaply.
local last = nil
for _, g in ipairs(redis.call('XINFO', 'GROUPS', s)) do
  if field(g, 'name') == 'carrot' then last = field(g, 'last-delivered-id') end
end
if last and last ~= '0-0' then
  local pending = redis.call('XPENDING', s, 'carrot')
  local floor = last
  if pending[1] > 0 then floor = pending[2] end
  redis.call('XTRIM', s, 'MINID', '~', floor)
end
local now = now_ms()
local out = {}
local function add(id, f, count)
  if field(f, 'carrot') == 'nudge' then
    redis.call('XACK', s, 'carrot', id)
    redis.call('XDEL', s, id)
    return
  end
  local exp = field(f, 'exp')
  local expired = exp ~= nil and tonumber(exp) <= now
  if noack then
    redis.call('XACK', s, 'carrot', id)
    redis.call('XDEL', s, id)
    if expired then return end
  end
  table.insert(out, {id, f, count, expired and 1 or 0})
end
if want > 0 then
  for _, pe in ipairs(redis.call('XPENDING', s, 'carrot', '-', '+', want, '~released')) do
    local c = redis.call('XCLAIM', s, 'carrot', consumer, 0, pe[1])
    if c[1] then add(c[1][1], c[1][2], pe[4] + 1) end
  end
end
local cursor = ARGV[5]
if #out < want then
  local r = redis.call('XAUTOCLAIM', s, 'carrot', consumer, vis, cursor, 'COUNT', want - #out)
  cursor = r[1]
  for _, e in ipairs(r[2]) do
    local _, count = owner(s, e[1])
    add(e[1], e[2], count)
  end
end
if #out < want and ARGV[6] == '1' then
  local r
  if noack then
    r = redis.call('XREADGROUP', 'GROUP', 'carrot', consumer, 'COUNT', want - #out, 'NOACK', 'STREAMS', s, '>')
  else
    r = redis.call('XREADGROUP', 'GROUP', 'carrot', consumer, 'COUNT', want - #out, 'STREAMS', s, '>')
  end
  if r then
    for _, e in ipairs(r[1][2]) do add(e[1], e[2], 1) end
  end
end
if #out > 0 and not noack then
  local ids = {}
  for i, e in ipairs(out) do ids[i] = e[1] end
  redis.call('HSET', takes, token, table.concat(ids, ','))
  redis.call('PEXPIRE', takes, 2 * tonumber(vis))
end
return {cursor, out}
`)

// scriptAbandon undoes a take whose caller stopped waiting for its answer: it returns the
// ids the take recorded, to be handed back, or, when the take has not run yet, marks it
// abandoned so that it takes nothing when it does. KEYS[1] takes; ARGV token, how long
// the mark lasts (ms).
var scriptAbandon = goredis.NewScript(`
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then
  redis.call('HSET', KEYS[1], ARGV[1], 'abandoned')
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {}
end
redis.call('HDEL', KEYS[1], ARGV[1])
local ids = {}
if v ~= 'abandoned' then
  for id in string.gmatch(v, '[^,]+') do table.insert(ids, id) end
end
return ids
`)

// scriptRelease hands messages a consumer holds back to the queue, to be delivered again
// first, and wakes blocked readers. A message another consumer took meanwhile (after the
// visibility timeout) is left alone and reported. KEYS[1] stream; ARGV consumer, ids.
var scriptRelease = goredis.NewScript(luaHelpers + `
local s = KEYS[1]
local lost = {}
local released = 0
for i = 2, #ARGV do
  if owner(s, ARGV[i]) == ARGV[1] then
    redis.call('XCLAIM', s, 'carrot', '~released', 0, ARGV[i], 'JUSTID')
    released = released + 1
  else
    table.insert(lost, ARGV[i])
  end
end
if released > 0 then redis.call('XADD', s, '*', 'carrot', 'nudge') end
return lost
`)

// scriptReleaseAll hands every message a consumer of a lost connection holds back to the
// queue, to be delivered again first, wakes blocked readers, and removes the consumer.
// KEYS[1] stream; ARGV consumer.
var scriptReleaseAll = goredis.NewScript(`
local s, consumer = KEYS[1], ARGV[1]
if redis.call('EXISTS', s) == 0 then return 0 end
local n = 0
while true do
  local ps = redis.call('XPENDING', s, 'carrot', '-', '+', 100, consumer)
  if #ps == 0 then break end
  for _, pe in ipairs(ps) do
    redis.call('XCLAIM', s, 'carrot', '~released', 0, pe[1], 'JUSTID')
    n = n + 1
  end
end
if n > 0 then redis.call('XADD', s, '*', 'carrot', 'nudge') end
redis.call('XGROUP', 'DELCONSUMER', s, 'carrot', consumer)
return n
`)

// scriptExtend restarts the visibility timeout of the messages a consumer holds, and
// reports those another consumer took meanwhile. KEYS[1] stream; ARGV consumer, ids.
var scriptExtend = goredis.NewScript(luaHelpers + `
local s = KEYS[1]
local lost = {}
for i = 2, #ARGV do
  if owner(s, ARGV[i]) == ARGV[1] then
    redis.call('XCLAIM', s, 'carrot', ARGV[1], 0, ARGV[i], 'JUSTID')
  else
    table.insert(lost, ARGV[i])
  end
end
return lost
`)

// scriptAck acknowledges messages of several queues; scriptTake trims them off the
// streams later. KEYS[1] routes the call; ARGV: prefix, then per queue: its name, the
// number of ids and the ids.
var scriptAck = goredis.NewScript(`
local p = ARGV[1]
local i = 2
while i <= #ARGV do
  local s, n = p .. 's:' .. ARGV[i], tonumber(ARGV[i + 1])
  redis.call('XACK', s, 'carrot', unpack(ARGV, i + 2, i + 1 + n))
  i = i + 2 + n
end
return 'OK'
`)

// scriptDeadLetter moves a message a consumer holds from its queue to the queues its
// dead-letter exchange routes it to (none: it is dropped), if the client's topology is
// current and the consumer still holds it. KEYS[1] version, KEYS[2] stream; ARGV version,
// prefix, consumer, id, the number of targets, each target's name and TTL in ms, and the
// fields.
var scriptDeadLetter = goredis.NewScript(luaHelpers + `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 'STALE' end
local p, consumer, id = ARGV[2], ARGV[3], ARGV[4]
local s = KEYS[2]
if owner(s, id) ~= consumer then return 'LOST' end
redis.call('XACK', s, 'carrot', id)
redis.call('XDEL', s, id)
local nt = tonumber(ARGV[5])
local f = 6 + 2 * nt
local now = now_ms()
for j = 0, nt - 1 do
  local t, ttl = p .. 's:' .. ARGV[6 + 2 * j], tonumber(ARGV[7 + 2 * j])
  if ttl > 0 then
    redis.call('XADD', t, '*', 'exp', string.format('%.0f', now + ttl), unpack(ARGV, f))
  else
    redis.call('XADD', t, '*', unpack(ARGV, f))
  end
end
return 'OK'
`)

// scriptPurge removes the messages waiting in a queue, requeued ones included, and
// returns how many. KEYS[1] stream, KEYS[2] queue.
var scriptPurge = goredis.NewScript(luaHelpers + `
local s = KEYS[1]
if redis.call('EXISTS', KEYS[2]) == 0 then return redis.error_reply('NOTFOUND queue not found') end
local n = 0
while true do
  local rel = redis.call('XPENDING', s, 'carrot', '-', '+', 100, '~released')
  if #rel == 0 then break end
  for _, pe in ipairs(rel) do
    redis.call('XACK', s, 'carrot', pe[1])
    n = n + redis.call('XDEL', s, pe[1])
  end
end
local last = '0-0'
for _, g in ipairs(redis.call('XINFO', 'GROUPS', s)) do
  if field(g, 'name') == 'carrot' then last = field(g, 'last-delivered-id') end
end
while true do
  local es = redis.call('XRANGE', s, '(' .. last, '+', 'COUNT', 100)
  if #es == 0 then break end
  for _, e in ipairs(es) do
    if field(e[2], 'carrot') ~= 'nudge' then n = n + 1 end
    redis.call('XDEL', s, e[1])
    last = e[1]
  end
end
return n
`)

// scriptExpired hands the janitor the expired messages at the head of a queue, so that it
// dead-letters them; it stops at the first that is not expired. KEYS[1] stream;
// ARGV janitor's consumer name, count.
var scriptExpired = goredis.NewScript(luaHelpers + `
local s = KEYS[1]
local now = now_ms()
local last = nil
for _, g in ipairs(redis.call('XINFO', 'GROUPS', s)) do
  if field(g, 'name') == 'carrot' then last = field(g, 'last-delivered-id') end
end
if not last then return {} end
local es = redis.call('XRANGE', s, '(' .. last, '+', 'COUNT', tonumber(ARGV[2]))
local n = 0
for _, e in ipairs(es) do
  local exp = field(e[2], 'exp')
  if field(e[2], 'carrot') ~= 'nudge' and (exp == nil or tonumber(exp) > now) then break end
  n = n + 1
end
if n == 0 then return {} end
local out = {}
local r = redis.call('XREADGROUP', 'GROUP', 'carrot', ARGV[1], 'COUNT', n, 'STREAMS', s, '>')
for _, e in ipairs(r[1][2]) do
  if field(e[2], 'carrot') == 'nudge' then
    redis.call('XACK', s, 'carrot', e[1])
    redis.call('XDEL', s, e[1])
  else
    table.insert(out, {e[1], e[2]})
  end
end
return out
`)

// scriptPublish adds a batch of messages, routed by the client with the topology at
// version ARGV[1], to their queues: if the version changed since, it adds nothing and
// answers STALE (the client loads the topology again and routes again); if the version
// is gone, Redis lost the namespace's data, and it answers LOST. It checks the type of
// every key before the first write, since a script does not roll back: a key of another
// type makes it answer "WRONGTYPE i", i the key's index in KEYS, having added nothing.
// It reads Redis's clock, once, if a message expires or waits.
//
// KEYS[1] version, KEYS[2] delayed, KEYS[3] due, KEYS[4...] the queues' streams. ARGV[1]
// the version; ARGV[2] "1" if a message is delayed, else "0"; ARGV[3...#KEYS-1] the
// message TTL (ms, 0 for none) of the queue of each stream (that of KEYS[k] in
// ARGV[k-1]); then runs of messages that go to the same
// queues with the same delay, expiration and field names, each: the number of messages,
// the number of queues, the delay (ms), the expiration (ms, 0 for none), the index in
// KEYS of each queue's stream; the number of fields whose value all its messages share,
// and their names and values; the number of the other fields, and their names; then,
// per message, the values of those. So a run of messages that differ only by their
// bodies costs one argument a message. A message expires after the shorter of its
// expiration and its queue's TTL, reckoned from when it is due; a delayed one waits in
// delayed, its first field "to" naming its queue's stream, scheduled in due.
var scriptPublish = goredis.NewScript(luaHelpers + `
local v = redis.call('GET', KEYS[1])
if not v then return 'LOST' end
if v ~= ARGV[1] then return 'STALE' end
for k = 2, #KEYS do
  if k > 3 or ARGV[2] == '1' then
    local t = redis.call('TYPE', KEYS[k])['ok']
    if t ~= 'none' and t ~= (k == 3 and 'zset' or 'stream') then return 'WRONGTYPE ' .. k end
  end
end
local now = nil
local i = #KEYS
while i <= #ARGV do
  local m, nt, delay, exp = tonumber(ARGV[i]), tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])
  local ks = i + 4
  i = ks + nt
  local shared = {}
  for j = i + 1, i + 2 * tonumber(ARGV[i]) do shared[#shared + 1] = ARGV[j] end
  i = i + 2 * tonumber(ARGV[i]) + 1
  local nv, names = tonumber(ARGV[i]), i
  i = i + nv + 1
  -- XADD's arguments for each queue, the values of the other fields left blank
  local lists, blank = {}, {}
  for t = 1, nt do
    local k = tonumber(ARGV[ks + t - 1])
    local s, ttl = KEYS[k], tonumber(ARGV[k - 1])
    if exp > 0 and (ttl == 0 or exp < ttl) then ttl = exp end
    if not now and (ttl > 0 or delay > 0) then now = now_ms() end
    local a
    if delay > 0 then a = {KEYS[2], '*', 'to', s} else a = {s, '*'} end
    if ttl > 0 then
      a[#a + 1] = 'exp'
      a[#a + 1] = string.format('%.0f', now + delay + ttl)
    end
    for _, x in ipairs(shared) do a[#a + 1] = x end
    blank[t] = #a
    for j = 1, nv do
      a[#a + 1] = ARGV[names + j]
      a[#a + 1] = ''
    end
    lists[t] = a
  end
  for _ = 1, m do
    for t = 1, nt do
      local a, b = lists[t], blank[t]
      for j = 1, nv do a[b + 2 * j] = ARGV[i + j - 1] end
      local id = redis.call('XADD', unpack(a))
      if delay > 0 then redis.call('ZADD', KEYS[3], now + delay, id) end
    end
    i = i + nv
  end
end
return 'OK'
`)

// scriptPromote: KEYS[1] delayed, KEYS[2] due; ARGV most to move. It adds the delayed
// messages that are due to their queues (but to those deleted meanwhile), and returns
// how many it moved and in how many ms the next one is due (-1 for none).
var scriptPromote = goredis.NewScript(luaHelpers + `
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, id in ipairs(due) do
  local e = redis.call('XRANGE', KEYS[1], id, id)
  if #e > 0 then
    local f = e[1][2]
    if redis.call('EXISTS', f[2]) == 1 then
      redis.call('XADD', f[2], '*', unpack(f, 3))
    end
    redis.call('XDEL', KEYS[1], id)
  end
  redis.call('ZREM', KEYS[2], id)
end
local next = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if #next == 0 then return {#due, -1} end
return {#due, math.max(tonumber(next[2]) - now, 0)}
`)
