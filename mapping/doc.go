// SPDX-License-Identifier: GPL-3.0-or-later

// Package mapping turns a message store event, seen from one IMAP session,
// into the exact bytes of the untagged responses that session must receive.
//
// It owns the event → response table of docs/notifications.md and the
// wire encoding of everything storage.notify writes itself:
// mailbox names (modified UTF-7, INBOX, quoting, literals), STATUS, LIST
// (including \NonExistent, \Subscribed and the OLDNAME extended item) and
// FETCH lines. Map decides, and is the only place that does: the registry
// asks it about every mailbox event queued for a session, about every new
// STATUS value of a mailbox (MapStatus, which applies Map's answer to the
// session's StatusView) and about the new messages of the selected mailbox
// (MapNewMessages). The *Line functions encode; StatusView keeps the
// per-session memory that makes STATUS coalesced and state-based. A change
// of what a session is told is a change of Map (map.go), or of
// Interest.Match for what a NOTIFY client's filters select.
//
// mapping is pure: no I/O, no locks, no goroutines, no clock. Every function
// may be called from any goroutine; a StatusView belongs to one session and
// its caller serialises access to it. The package imports only the standard
// library, package event and go-imap v1 (the maddy fork) for the formats
// maddy itself writes; it must not import the rest of this module, maddy, or
// go-imap v2 (the tests use go-imap v2's client as a strict parser).
//
// Interest is what a session asked to be told with the NOTIFY command (RFC
// 5465; package notifycmd parses it): its Match decides, for one change,
// which event group applies and whether the client wants the change
// (docs/notify.md).
//
// Responses that go-imap-mess already sends for the selected mailbox (EXISTS,
// RECENT, EXPUNGE, FETCH FLAGS) are never produced by Map: Plan says
// SelectedHandledByStore instead, so nothing is duplicated.
package mapping
