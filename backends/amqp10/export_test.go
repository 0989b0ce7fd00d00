package amqp10

import "context"

// FixedLinks returns the addresses that the connection's publisher has a link with a
// fixed target for.
func (c *Conn) FixedLinks() []string {
	p := c.pub.Load()
	if p == nil || p.links.Load() == nil {
		return nil
	}
	var addrs []string
	for a := range *p.links.Load() {
		addrs = append(addrs, a)
	}
	return addrs
}

// CheckOwnerOfGone runs a passive declaration's ownership check of an exclusive queue
// as if a GET had just found the queue name, which is gone by the time of the check.
func (c *Conn) CheckOwnerOfGone(ctx context.Context, name string) error {
	info := map[string]any{"durable": false, "exclusive": true, "auto_delete": false, "arguments": map[string]any{}}
	return c.checkOwner(ctx, name, info)
}

// LoseAllSessions counts every channel number of the connection as lost to a begin the
// broker never answered.
func (c *Conn) LoseAllSessions() {
	c.sess.mu.Lock()
	c.sess.lost = c.sess.limit
	c.sess.mu.Unlock()
}

// SessionLimitOf is sessionLimit, for the body of an open frame.
var SessionLimitOf = sessionLimit
