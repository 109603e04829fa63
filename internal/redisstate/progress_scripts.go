package redisstate

import "github.com/redis/go-redis/v9"

// The progress keys under the prefix:
//
//	progress:up:{owner}:{id}  an upload's record (a hash), {owner} the
//	                          sha256 of the owner value in hex ("" for
//	                          none); its TTL: the lease while a request
//	                          receives it, Idle for a resumable upload
//	                          between requests, the retention once finished
//	progress:finished         the finished records by end time (a sorted
//	                          set, for the cap); its TTL is the retention
//	progress:tus:{id}         the records of the resumable uploads in flight
//	                          under id, of every owner (a set, for Expire);
//	                          emptied as they finish, its TTL is Idle
//
// and the channels:
//
//	progress:cancel           "{owner}:{id} {gen}": stop that upload
//	progress:changed          "{owner}:{id}": the upload started, ended or
//	                          was cancelled
//
// A record's fields: gen (random, names one upload under the key), kind,
// size, started and at (Unix ns, the writer's clock: when it started and
// when it was last written), received, state, status, code, files, and
// cancelled (the durable cancel flag).

// retire is the Lua that keeps a finished record for the retention and
// drops the oldest finished beyond the cap: retire(record, finished set,
// retention in ms, cap).
const retire = `
local function retire(rec, fin, retention, cap)
  retention = tonumber(retention)
  redis.call('PEXPIRE', rec, retention)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  redis.call('ZADD', fin, string.format('%.0f', now), rec)
  redis.call('ZREMRANGEBYSCORE', fin, '-inf', '(' .. string.format('%.0f', now - retention * 1000))
  local over = redis.call('ZCARD', fin) - tonumber(cap)
  if over > 0 then
    local old = redis.call('ZPOPMIN', fin, over)
    for i = 1, #old, 2 do
      if redis.call('HGET', old[i], 'state') ~= 'uploading' then redis.call('DEL', old[i]) end
    end
  end
  redis.call('PEXPIRE', fin, retention)
end
`

var (
	// beginScript starts or joins an upload: KEYS record, tus index; ARGV
	// mode (start|attach), gen, kind, size, started, received, at, lease
	// ms, index TTL ms, changed channel, rid. It returns {0} for busy, {1,
	// gen, started, cancelled} for joined, {2} for another kind in flight,
	// {3} for started.
	beginScript = redis.NewScript(`
local st = redis.call('HGET', KEYS[1], 'state')
if st == 'uploading' then
  if ARGV[1] ~= 'attach' then return {0} end
  local f = redis.call('HMGET', KEYS[1], 'kind', 'gen', 'started', 'cancelled')
  if f[1] ~= ARGV[3] then return {2} end
  redis.call('PEXPIRE', KEYS[1], ARGV[8])
  local c = 0
  if f[4] then c = 1 end
  return {1, f[2], f[3], c}
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'gen', ARGV[2], 'kind', ARGV[3], 'size', ARGV[4], 'started', ARGV[5],
  'received', ARGV[6], 'at', ARGV[7], 'state', 'uploading')
redis.call('PEXPIRE', KEYS[1], ARGV[8])
if ARGV[3] == 'tus' then
  redis.call('SADD', KEYS[2], KEYS[1])
  redis.call('PEXPIRE', KEYS[2], ARGV[9])
end
redis.call('PUBLISH', ARGV[10], ARGV[11])
return {3}`)

	// writeScript writes the count of an upload in flight and renews its
	// TTL: KEYS record, tus index; ARGV gen, received, at, TTL ms, index
	// TTL ms (0: leave it). It returns -1 when the upload is no longer in
	// flight under gen, 1 when it was cancelled, else 0.
	writeScript = redis.NewScript(`
local f = redis.call('HMGET', KEYS[1], 'gen', 'state', 'cancelled')
if f[1] ~= ARGV[1] or f[2] ~= 'uploading' then return -1 end
redis.call('HSET', KEYS[1], 'received', ARGV[2], 'at', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
if tonumber(ARGV[5]) > 0 then redis.call('PEXPIRE', KEYS[2], ARGV[5]) end
if f[3] then return 1 end
return 0`)

	// finishScript records an upload's end: KEYS record, finished set, tus
	// index; ARGV gen, state, status, code, files, received, at, retention
	// ms, cap, changed channel, rid. It returns 0 when the upload was not
	// in flight under gen.
	finishScript = redis.NewScript(retire + `
local f = redis.call('HMGET', KEYS[1], 'gen', 'state')
if f[1] ~= ARGV[1] or f[2] ~= 'uploading' then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'status', ARGV[3], 'code', ARGV[4], 'files', ARGV[5],
  'received', ARGV[6], 'at', ARGV[7])
redis.call('HDEL', KEYS[1], 'cancelled')
redis.call('SREM', KEYS[3], KEYS[1])
retire(KEYS[1], KEYS[2], ARGV[8], ARGV[9])
redis.call('PUBLISH', ARGV[10], ARGV[11])
return 1`)

	// expireScript ends, as expired, the uploads in flight of a tus index:
	// KEYS index, finished set; ARGV at, retention ms, cap, changed
	// channel, status, code, length of the record key before the rid. It
	// returns how many it ended.
	expireScript = redis.NewScript(retire + `
local n = 0
for _, rec in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('HGET', rec, 'state') == 'uploading' then
    redis.call('HSET', rec, 'state', 'error', 'status', ARGV[5], 'code', ARGV[6], 'at', ARGV[1])
    redis.call('HDEL', rec, 'cancelled')
    retire(rec, KEYS[2], ARGV[2], ARGV[3])
    redis.call('PUBLISH', ARGV[4], string.sub(rec, tonumber(ARGV[7]) + 1))
    n = n + 1
  end
end
redis.call('DEL', KEYS[1])
return n`)

	// cancelScript sets the cancel flag of an upload in flight and says so:
	// KEYS record; ARGV cancel channel, changed channel, rid, the end time
	// (Unix ns) at or before which a finished upload counts as forgotten.
	// It returns 0 for no upload, 2 for a finished one, else 1.
	cancelScript = redis.NewScript(`
local f = redis.call('HMGET', KEYS[1], 'state', 'gen', 'at')
if not f[1] then return 0 end
if f[1] ~= 'uploading' then
  if tonumber(f[3]) <= tonumber(ARGV[4]) then return 0 end
  return 2
end
redis.call('HSET', KEYS[1], 'cancelled', '1')
redis.call('PUBLISH', ARGV[1], ARGV[3] .. ' ' .. f[2])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1`)
)
