package natsbroker

import "errors"

// Status reports nil while the connection to NATS is up, else why not,
// for the server's readiness probe. Safe for concurrent use.
func (b *Broker) Status() error {
	if b.nc.IsConnected() {
		return nil
	}
	return errors.New("NATS " + b.nc.Status().String())
}
