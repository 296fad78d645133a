// SPDX-License-Identifier: GPL-3.0-or-later

package notify

import (
	"fmt"
	"reflect"
	"strings"
)

// pipeMode mirrors maddy's internal updatepipe.BackendMode values.
type pipeMode int

const (
	pipeReplicate pipeMode = 0 // updatepipe.ModeReplicate: send and receive
	pipePush      pipeMode = 1 // updatepipe.ModePush: send only (CLI)
)

// updatePipeModeType is the parameter type EnableUpdatePipe must take.
const (
	updatePipePkg      = "github.com/foxcpp/maddy/internal/updatepipe"
	updatePipeModeName = "BackendMode"
)

var errorType = reflect.TypeOf((*error)(nil)).Elem()

// enableUpdatePipe calls inner.EnableUpdatePipe(mode) and reports whether
// inner has that method.
//
// This is the one place where the module reaches past maddy's public API.
// maddy's IMAP endpoint and CLI switch on a storage's update pipe (which
// carries EXISTS/EXPUNGE/FLAGS between processes and instances) only on the
// storage they are given, through updatepipe.Backend, whose parameter type
// lives in maddy's internal/updatepipe and so cannot be named here. The
// endpoint is given this wrapper, so the wrapper switches the pipe on for
// the inner storage by reflection. If maddy changes the method's shape the
// call fails with an error instead of guessing; TestInnerUpdatePipeShape
// fails loudly in that case.
func enableUpdatePipe(inner interface{}, mode pipeMode) (found bool, err error) {
	m := reflect.ValueOf(inner).MethodByName("EnableUpdatePipe")
	if !m.IsValid() {
		return false, nil
	}
	t := m.Type()
	if t.NumIn() != 1 || t.NumOut() != 1 || t.Out(0) != errorType ||
		t.In(0).PkgPath() != updatePipePkg || t.In(0).Name() != updatePipeModeName ||
		t.In(0).Kind() != reflect.Int {
		return true, fmt.Errorf("notify: %T.EnableUpdatePipe has an unsupported signature %v", inner, t)
	}
	arg := reflect.New(t.In(0)).Elem()
	arg.SetInt(int64(mode))
	out := m.Call([]reflect.Value{arg})
	if e, _ := out[0].Interface().(error); e != nil {
		return true, fmt.Errorf("notify: enable update pipe of %T: %w", inner, e)
	}
	return true, nil
}

// innerSQL reads the driver and DSN of a storage.imapsql block, for the
// broker's default DSN (`broker postgres` without one). maddy keeps them in
// unexported fields of its internal type; reflection may read them. If
// maddy renames them, ok is false and `broker postgres` asks for a DSN;
// TestInnerSQLShape fails loudly in that case.
func innerSQL(inner interface{}) (driver, dsn string, ok bool) {
	v := reflect.ValueOf(inner)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return "", "", false
	}
	v = v.Elem()
	if v.Type().PkgPath() != "github.com/foxcpp/maddy/internal/storage/imapsql" {
		return "", "", false
	}
	d, ds := v.FieldByName("driver"), v.FieldByName("dsn")
	if d.Kind() != reflect.String || ds.Kind() != reflect.Slice || ds.Type().Elem().Kind() != reflect.String {
		return "", "", false
	}
	parts := make([]string, ds.Len())
	for i := range parts {
		parts[i] = ds.Index(i).String()
	}
	return d.String(), strings.Join(parts, " "), true
}
