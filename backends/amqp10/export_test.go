package amqp10

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
