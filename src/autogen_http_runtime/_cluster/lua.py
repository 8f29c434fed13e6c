"""The Lua scripts that change a cluster's directory in Redis, each atomic. No I/O.

Every script gets ``KEYS[1]`` (the cluster's version key, so that Redis knows the slot)
and ``ARGV[1..3]``: the cluster's key prefix, the change log's length and the calling
host's name; the rest of ``ARGV`` is the script's own (named in each). A change is logged
in the stream ``<prefix>log`` under id ``0-<version>``, with its operation (``o``) and
two arguments (``a``, ``b``): every host applies the log to its view in that order.

A change answers the new (or current) version, or ``{code, detail}`` when it is refused:
``NOLEASE`` (the host has no lease: it must join again), ``TAKEN``, ``EXISTS``,
``NOTFOUND``, ``FORBIDDEN``, ``NOWORKER``, ``NOTYPE``.

Keys below the prefix (``autogen:{<cluster>}:``): ``epoch``, ``ver``, ``log``,
``settings`` (hash), ``hosts`` (hash: host -> JSON), ``lease:<host>``, ``hw:<host>`` (set of
its workers), ``workers`` (hash: worker -> JSON), ``instances`` (hash: instance -> worker),
``types`` (hash: type -> JSON list of workers), ``pins`` (hash: agent id -> worker),
``subs`` (hash: id -> JSON), ``match`` (hash: kind NUL topic NUL type -> JSON list of ids),
``own:<worker>`` (set of ``t:<type>``, ``p:<agent id>``, ``s:<id>``).
"""

from __future__ import annotations

from typing import Final

_PRELUDE: Final = r"""
local P, MAXLEN, ME = ARGV[1], ARGV[2], ARGV[3]

local function version() return tonumber(redis.call('GET', P .. 'ver') or '0') end

local function log(op, a, b)
  local v = redis.call('INCR', P .. 'ver')
  redis.call('XADD', P .. 'log', 'MAXLEN', '~', MAXLEN, '0-' .. v, 'o', op, 'a', a, 'b', b or '')
  return v
end

local function joined() return redis.call('EXISTS', P .. 'lease:' .. ME) == 1 end

local function list_has(hash, field, value)
  local raw = redis.call('HGET', P .. hash, field)
  if not raw then return false end
  for _, x in ipairs(cjson.decode(raw)) do if x == value then return true end end
  return false
end

local function list_add(hash, field, value)
  local raw = redis.call('HGET', P .. hash, field)
  local items = raw and cjson.decode(raw) or {}
  items[#items + 1] = value
  redis.call('HSET', P .. hash, field, cjson.encode(items))
end

local function list_remove(hash, field, value)
  local raw = redis.call('HGET', P .. hash, field)
  if not raw then return false end
  local keep, found = {}, false
  for _, x in ipairs(cjson.decode(raw)) do
    if x == value then found = true else keep[#keep + 1] = x end
  end
  if not found then return false end
  if #keep == 0 then redis.call('HDEL', P .. hash, field)
  else redis.call('HSET', P .. hash, field, cjson.encode(keep)) end
  return true
end

local function drop_sub(id)
  local raw = redis.call('HGET', P .. 'subs', id)
  if not raw then return false end
  local sub = cjson.decode(raw)
  list_remove('match', sub.kind .. '\0' .. sub.topic .. '\0' .. sub.agent_type, id)
  redis.call('HDEL', P .. 'subs', id)
  redis.call('SREM', P .. 'own:' .. sub.w, 's:' .. id)
  return true
end

local function drop_pin(w, agent)
  if redis.call('HGET', P .. 'pins', agent) ~= w then return false end
  redis.call('HDEL', P .. 'pins', agent)
  redis.call('SREM', P .. 'own:' .. w, 'p:' .. agent)
  return true
end

-- w leaves agent type t, and its agents of that type are unpinned (the view does the same).
local function drop_type(w, t)
  if not list_remove('types', t, w) then return false end
  local own = P .. 'own:' .. w
  redis.call('SREM', own, 't:' .. t)
  local prefix = 'p:' .. t .. '/'
  for _, item in ipairs(redis.call('SMEMBERS', own)) do
    if string.sub(item, 1, #prefix) == prefix then drop_pin(w, string.sub(item, 3)) end
  end
  return true
end

-- Everything of worker w goes; one change says so (the views drop its entries with it).
local function drop_worker(w, why)
  local raw = redis.call('HGET', P .. 'workers', w)
  if not raw then return false end
  local info = cjson.decode(raw)
  for _, item in ipairs(redis.call('SMEMBERS', P .. 'own:' .. w)) do
    local kind, name = string.sub(item, 1, 1), string.sub(item, 3)
    if kind == 't' then list_remove('types', name, w)
    elseif kind == 'p' then redis.call('HDEL', P .. 'pins', name)
    elseif kind == 's' then drop_sub(name) end
  end
  redis.call('DEL', P .. 'own:' .. w)
  redis.call('HDEL', P .. 'workers', w)
  if info.i ~= '' and redis.call('HGET', P .. 'instances', info.i) == w then
    redis.call('HDEL', P .. 'instances', info.i)
  end
  redis.call('SREM', P .. 'hw:' .. info.h, w)
  log('w-', w, why)
  return true
end

-- Worker w of this host, described by info (JSON: h host, i instance, y identity, ...).
-- Another worker with the same instance is replaced if it has the same identity.
local function upsert_worker(w, info, instance, identity)
  if instance ~= '' then
    local other = redis.call('HGET', P .. 'instances', instance)
    if other and other ~= w then
      local raw = redis.call('HGET', P .. 'workers', other)
      if raw and cjson.decode(raw).y ~= identity then return {'FORBIDDEN', other} end
      drop_worker(other, 'replaced by a new connection from the same worker')
    end
    redis.call('HSET', P .. 'instances', instance, w)
  end
  if redis.call('HGET', P .. 'workers', w) == info then return version() end
  redis.call('HSET', P .. 'workers', w, info)
  redis.call('SADD', P .. 'hw:' .. ME, w)
  return log('w+', w, info)
end

local function join_type(w, t, replicas)
  if redis.call('HEXISTS', P .. 'workers', w) == 0 then return {'NOWORKER', w} end
  local raw = redis.call('HGET', P .. 'types', t)
  if raw then
    local members = cjson.decode(raw)
    for _, m in ipairs(members) do if m == w then return version() end end
    if replicas ~= '1' then return {'TAKEN', members[1]} end
  end
  list_add('types', t, w)
  redis.call('SADD', P .. 'own:' .. w, 't:' .. t)
  return log('t+', t, w)
end

local function pin(w, agent, t)
  if not list_has('types', t, w) then return {'NOTYPE', t} end
  local pinned = redis.call('HGET', P .. 'pins', agent)
  if pinned == w then return version() end
  if pinned then return {'TAKEN', pinned} end
  redis.call('HSET', P .. 'pins', agent, w)
  redis.call('SADD', P .. 'own:' .. w, 'p:' .. agent)
  return log('p+', agent, w)
end

-- A subscription (JSON with its worker as w) that matches as match does; with shared,
-- workers may each hold one that matches the same way (replicas), a worker only one.
local function add_sub(w, id, sub, match, shared)
  if redis.call('HEXISTS', P .. 'workers', w) == 0 then return {'NOWORKER', w} end
  if redis.call('HEXISTS', P .. 'subs', id) == 1 then return {'EXISTS', id} end
  local raw = redis.call('HGET', P .. 'match', match)
  if raw then
    for _, other in ipairs(cjson.decode(raw)) do
      if shared ~= '1' then return {'EXISTS', other} end
      local held = redis.call('HGET', P .. 'subs', other)
      if held and cjson.decode(held).w == w then return {'EXISTS', other} end
    end
  end
  redis.call('HSET', P .. 'subs', id, sub)
  list_add('match', match, id)
  redis.call('SADD', P .. 'own:' .. w, 's:' .. id)
  return log('s+', id, sub)
end
"""

#: ARGV[4]: this host's JSON, [5]: lease in ms, [6]: an epoch for a fresh data set,
#: [7..]: setting name, value, ... The settings bind while another host holds a lease.
JOIN: Final = (
    _PRELUDE
    + r"""
local alive = false
for _, h in ipairs(redis.call('HKEYS', P .. 'hosts')) do
  if h ~= ME and redis.call('EXISTS', P .. 'lease:' .. h) == 1 then alive = true; break end
end
if alive then
  for i = 7, #ARGV, 2 do
    local theirs = redis.call('HGET', P .. 'settings', ARGV[i])
    if theirs and theirs ~= ARGV[i + 1] then return {'DISAGREE', ARGV[i], theirs} end
  end
else
  redis.call('DEL', P .. 'settings')
end
for i = 7, #ARGV, 2 do redis.call('HSET', P .. 'settings', ARGV[i], ARGV[i + 1]) end
redis.call('SET', P .. 'lease:' .. ME, '1', 'PX', ARGV[5])
redis.call('HSET', P .. 'hosts', ME, ARGV[4])
redis.call('SETNX', P .. 'epoch', ARGV[6])
return {'OK', redis.call('GET', P .. 'epoch'), tostring(version())}
"""
)

#: ARGV[4]: lease in ms. Renews this host's lease and reaps the hosts whose lease expired.
#: Answers {1 if renewed else 0, live hosts, hosts reaped now}.
TICK: Final = (
    _PRELUDE
    + r"""
local mine = redis.call('SET', P .. 'lease:' .. ME, '1', 'PX', ARGV[4], 'XX')
local live, gone = {}, {}
for _, h in ipairs(redis.call('HKEYS', P .. 'hosts')) do
  if redis.call('EXISTS', P .. 'lease:' .. h) == 1 then
    live[#live + 1] = h
  elseif h ~= ME then
    for _, w in ipairs(redis.call('SMEMBERS', P .. 'hw:' .. h)) do
      drop_worker(w, 'its host ' .. h .. ' is gone')
    end
    redis.call('DEL', P .. 'hw:' .. h)
    redis.call('HDEL', P .. 'hosts', h)
    log('h-', h, 'its lease expired')
    gone[#gone + 1] = h
  end
end
return {mine and 1 or 0, live, gone}
"""
)

#: Leaves the cluster: every worker of this host goes, then the host.
LEAVE: Final = (
    _PRELUDE
    + r"""
for _, w in ipairs(redis.call('SMEMBERS', P .. 'hw:' .. ME)) do drop_worker(w, 'its host left') end
redis.call('DEL', P .. 'hw:' .. ME, P .. 'lease:' .. ME)
if redis.call('HDEL', P .. 'hosts', ME) == 1 then return log('h-', ME, 'it left') end
return version()
"""
)

#: ARGV[4]: the changes, as JSON: [[op, arg, ...], ...] (see ``engine.Write``), made in
#: order in one go. Answers one version or refusal per change. Without a lease, nothing
#: is added (each answers ``NOLEASE``); removals still are.
WRITE: Final = (
    _PRELUDE
    + r"""
local ok = joined()
local out = {}
for i, op in ipairs(cjson.decode(ARGV[4])) do
  local name, r = op[1], nil
  if name == 'remove_worker' then
    local raw = redis.call('HGET', P .. 'workers', op[2])
    if raw and cjson.decode(raw).h == ME then drop_worker(op[2], op[3]) end
    r = version()
  elseif name == 'leave_type' then
    if drop_type(op[2], op[3]) then r = log('t-', op[3], op[2]) else r = version() end
  elseif name == 'remove_subscription' then
    if drop_sub(op[2]) then r = log('s-', op[2], '') else r = {'NOTFOUND', op[2]} end
  elseif not ok then r = {'NOLEASE', ''}
  elseif name == 'upsert_worker' then r = upsert_worker(op[2], op[3], op[4], op[5])
  elseif name == 'join_type' then r = join_type(op[2], op[3], op[4])
  elseif name == 'pin' then r = pin(op[2], op[3], op[4])
  elseif name == 'add_subscription' then r = add_sub(op[2], op[3], op[4], op[5], op[6])
  else r = {'UNKNOWN', name} end
  out[i] = r
end
return out
"""
)

#: Answers {epoch, version, workers, types, pins, subscriptions (each flat HGETALL), live hosts}.
SNAPSHOT: Final = (
    _PRELUDE
    + r"""
local live = {}
for _, h in ipairs(redis.call('HKEYS', P .. 'hosts')) do
  if redis.call('EXISTS', P .. 'lease:' .. h) == 1 then live[#live + 1] = h end
end
return {redis.call('GET', P .. 'epoch') or '', tostring(version()),
        redis.call('HGETALL', P .. 'workers'), redis.call('HGETALL', P .. 'types'),
        redis.call('HGETALL', P .. 'pins'), redis.call('HGETALL', P .. 'subs'), live}
"""
)

#: ARGV[4]: everything this host holds, as JSON: {"replicas": bool, "workers": [{"w", "info",
#: "i", "y", "types": [...], "pins": [[agent, type], ...], "subs": [[id, JSON, match], ...]}]}.
#: Puts it back as it is (after Redis lost it, or this host was declared gone while it
#: lived): what Redis holds of this host and the JSON does not is dropped. Answers
#: {version, refusals: [what, code, detail], ...}.
ASSERT_HOST: Final = (
    _PRELUDE
    + r"""
if not joined() then return {'NOLEASE', ''} end
local state = cjson.decode(ARGV[4])
local replicas = state.replicas and '1' or '0'
local refused = {}
local function check(what, answer)
  if type(answer) == 'table' then refused[#refused + 1] = {what, answer[1], answer[2]} end
  return type(answer) ~= 'table'
end
local wanted = {}
for _, wk in ipairs(state.workers) do wanted[wk.w] = true end
for _, w in ipairs(redis.call('SMEMBERS', P .. 'hw:' .. ME)) do
  if not wanted[w] then drop_worker(w, 'it left its host') end
end
for _, wk in ipairs(state.workers) do
  if check('worker ' .. wk.w, upsert_worker(wk.w, wk.info, wk.i, wk.y)) then
    local own = P .. 'own:' .. wk.w
    local keep = {}
    for _, t in ipairs(wk.types) do keep['t:' .. t] = true end
    for _, p in ipairs(wk.pins) do keep['p:' .. p[1]] = true end
    for _, s in ipairs(wk.subs) do keep['s:' .. s[1]] = true end
    for _, item in ipairs(redis.call('SMEMBERS', own)) do
      if not keep[item] then
        local kind, name = string.sub(item, 1, 1), string.sub(item, 3)
        if kind == 't' and drop_type(wk.w, name) then log('t-', name, wk.w)
        elseif kind == 'p' and drop_pin(wk.w, name) then log('p-', name, wk.w)
        elseif kind == 's' and drop_sub(name) then log('s-', name, '') end
      end
    end
    for _, t in ipairs(wk.types) do check('agent type ' .. t, join_type(wk.w, t, replicas)) end
    for _, p in ipairs(wk.pins) do check('agent ' .. p[1], pin(wk.w, p[1], p[2])) end
    for _, s in ipairs(wk.subs) do
      if redis.call('HGET', P .. 'subs', s[1]) ~= s[2] then
        check('subscription ' .. s[1], add_sub(wk.w, s[1], s[2], s[3], replicas))
      end
    end
  end
end
return {tostring(version()), refused}
"""
)
