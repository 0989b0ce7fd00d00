package redis

import (
	"context"
	"errors"

	goredis "github.com/redis/go-redis/v9"

	"github.com/carrot-go/carrot/backend"
)

var _ backend.Inspector = (*Conn)(nil)

// inspectScan is how many of the entries not yet delivered to a queue's group
// scriptInspect reads, to tell messages from nudges, when Redis's lag says there are that
// few (or cannot say): a bounded cost, whatever the size of the messages.
const inspectScan = 32

// scriptInspect counts a queue's messages and consumers, changing nothing. It returns
// {ready, unacked, consumers}, ready -1 when it cannot tell.
//
// Ready is the entries not yet delivered to the group, nudges left out, plus the
// requeued messages that the consumer "~released" holds. The group's lag says how many
// entries are undelivered; when it says at most ARGV[2] (or cannot say: XDEL, which a
// purge uses, leaves Redis unable to reckon it until the group reads past), the script
// reads them, so that nudges are not counted; beyond, the lag is taken as it is, nudges
// and all (a nudge lives until a reader reads past it). Unacked is the group's pending
// entries but the released ones. Consumers is the group's consumers but "~released",
// "~janitor" and those that fetch (":get"), and but those idle for ARGV[1] ms or more:
// a live subscription reads at least once per block time, or has its messages claimed
// again by its connection's heartbeat; a dead process's consumer stays in the group.
//
// KEYS[1] stream, KEYS[2] queue; ARGV idle limit (ms), scan limit.
var scriptInspect = goredis.NewScript(luaHelpers + `
if redis.call('EXISTS', KEYS[2]) == 0 then return redis.error_reply('NOTFOUND queue not found') end
local s = KEYS[1]
if redis.call('EXISTS', s) == 0 then return {0, 0, 0} end
local idle, scan = tonumber(ARGV[1]), tonumber(ARGV[2])
local last, lag, pending = '0-0', nil, 0
for _, g in ipairs(redis.call('XINFO', 'GROUPS', s)) do
  if field(g, 'name') == 'carrot' then
    last, pending = field(g, 'last-delivered-id'), field(g, 'pending')
    local l = field(g, 'lag')
    if l then lag = tonumber(l) end
  end
end
local released, consumers = 0, 0
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', s, 'carrot')) do
  local name = field(c, 'name')
  if name == '~released' then
    released = field(c, 'pending')
  elseif string.sub(name, 1, 1) ~= '~' and string.sub(name, -4) ~= ':get' and field(c, 'idle') < idle then
    consumers = consumers + 1
  end
end
local ready = -1
if lag and lag > scan then
  ready = lag + released
else
  local es = redis.call('XRANGE', s, '(' .. last, '+', 'COUNT', scan + 1)
  if #es <= scan then
    ready = released
    for _, e in ipairs(es) do
      if field(e[2], 'carrot') ~= 'nudge' then ready = ready + 1 end
    end
  end
end
return {ready, pending - released, consumers}
`)

// InspectQueue counts, in one script, the queue's ready messages (new and requeued), its
// messages delivered and not settled (to the consumers and fetches of every connection,
// live or dead), and its live consumers. Ready is -1 when Redis cannot tell, which is
// rare: see the package documentation.
func (c *Conn) InspectQueue(ctx context.Context, name string) (backend.QueueStats, error) {
	s, q := c.stream(name)
	idle := max(c.opts.VisibilityTimeout, 2*c.opts.Block).Milliseconds()
	var res []int64
	err := c.try(ctx, func() error {
		var err error
		res, err = scriptInspect.Run(ctx, c.rdb, []string{s, q}, idle, inspectScan).Int64Slice()
		return err
	})
	if err != nil {
		return backend.QueueStats{}, err
	}
	if len(res) != 3 {
		return backend.QueueStats{}, errors.New("carrot/redis: unexpected reply inspecting a queue")
	}
	return backend.QueueStats{Ready: res[0], Unacked: res[1], Consumers: int(res[2])}, nil
}
