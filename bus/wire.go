// SPDX-License-Identifier: GPL-3.0-or-later

package bus

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/maddy-notify/maddy-notify/event"
	"github.com/maddy-notify/maddy-notify/metrics"
)

// message is what crosses processes, in a PostgreSQL notification's
// payload or as one line on the module's unix socket: no message content,
// only what the receiving side needs to find the sessions and query its
// own store. It is encoded as JSON (event.Kind as its name).
type message struct {
	Instance  string       `json:"i"`
	Event     *event.Event `json:"e,omitempty"`
	Reconcile string       `json:"r,omitempty"`
}

// errEmptyMessage is returned for a message with neither an event nor a
// reconcile request.
var errEmptyMessage = errors.New("bus: message carries neither an event nor a reconcile request")

func encodeMessage(m message) ([]byte, error) {
	return json.Marshal(m)
}

// decodeMessage decodes one message; it does not validate its event.
func decodeMessage(payload []byte) (message, error) {
	var m message
	if err := json.Unmarshal(payload, &m); err != nil {
		return message{}, fmt.Errorf("bus: decode: %w", err)
	}
	if m.Event == nil && m.Reconcile == "" {
		return message{}, errEmptyMessage
	}
	return m, nil
}

// deliverTo hands a message that came from another process to sink, as if
// it had happened here: the event's origin is cleared (session ids are per
// process) and the event is validated first. m is counted as received in
// metrics (nil: not counted).
func (m message) deliverTo(sink Sink, metrics *metrics.Set) error {
	if m.Event != nil {
		ev := *m.Event
		ev.Origin = 0
		if err := ev.Validate(); err != nil {
			return err
		}
		metrics.Received(ev.Kind.String())
		sink.Publish(ev)
		return nil
	}
	if m.Reconcile == "" {
		return errEmptyMessage
	}
	metrics.Received("Reconcile")
	sink.Reconcile(m.Reconcile)
	return nil
}
