// SPDX-License-Identifier: GPL-3.0-or-later

// Command maddy-build builds the maddy mail server (the full maddy CLI:
// run, creds, imap-acct, imap-mboxes, imap-msgs, hash, ...) with the
// storage.notify module of maddy-notify linked in.
//
// From a checkout of maddy-notify (the module found by walking up from the
// working directory is linked in through a replace directive):
//
//	go run ./cmd/maddy-build -o build/maddy
//
// From a tagged release (the module is fetched through the Go module proxy,
// the checkout only provides this command):
//
//	go run ./cmd/maddy-build -version vX.Y.Z -o ./maddy
//
// or with a checkout of the tag itself:
//
//	git clone --branch vX.Y.Z <repository> maddy-notify && cd maddy-notify
//	go run ./cmd/maddy-build -o ./maddy
//
// The checkout-free form
//
//	go run github.com/maddy-notify/maddy-notify/cmd/maddy-build@vX.Y.Z -version vX.Y.Z -o ./maddy
//
// does not work while this module's go.mod carries replace directives (it
// must repeat maddy's three): `go run pkg@version` refuses such modules
// ("The go.mod file for the module providing named packages contains one
// or more replace directives").
//
// Flags:
//
//	-o PATH           binary to write (default build/maddy)
//	-module-dir DIR   checkout of maddy-notify to link in (default: the
//	                  checkout containing the working directory)
//	-version VERSION  link in this tagged version of maddy-notify instead of
//	                  a checkout; exclusive with -module-dir
//	-maddy VERSION    maddy version to build (default v0.8.2)
//	-tags TAGS        extra build tags, comma separated
//
// The binary reports "<maddy version>+notify" in `maddy version`. Build
// needs the go command and, for maddy's cgo SQLite driver, a C compiler
// (without cgo, CGO_ENABLED=0, maddy falls back to modernc.org/sqlite).
// Environment variables of the go command (GOFLAGS, GOPROXY, ...) apply.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/maddy-notify/maddy-notify/internal/custombuild"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "maddy-build:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		o    custombuild.Options
		tags string
	)
	flag.StringVar(&o.Output, "o", "build/maddy", "path of the `binary` to write")
	flag.StringVar(&o.ModuleDir, "module-dir", "", "checkout of maddy-notify to link in (default: the checkout containing the working directory)")
	flag.StringVar(&o.ModuleVersion, "version", "", "tagged `version` of maddy-notify to link in instead of a checkout")
	flag.StringVar(&o.MaddyVersion, "maddy", custombuild.DefaultMaddyVersion, "maddy `version` to build")
	flag.StringVar(&tags, "tags", "", "extra build `tags`, comma separated")
	flag.Usage = func() {
		fmt.Fprint(flag.CommandLine.Output(), `Usage: maddy-build [flags]

Builds the maddy mail server CLI with maddy-notify's storage.notify linked in.

  link in this checkout:        go run ./cmd/maddy-build -o build/maddy
  link in a tagged version:     go run ./cmd/maddy-build -version vX.Y.Z -o ./maddy

Flags:
`)
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 0 {
		flag.Usage()
		return fmt.Errorf("unexpected arguments: %s", strings.Join(flag.Args(), " "))
	}

	if o.ModuleDir != "" && o.ModuleVersion != "" {
		return errors.New("-module-dir and -version are exclusive")
	}
	if o.ModuleDir == "" && o.ModuleVersion == "" {
		wd, err := os.Getwd()
		if err != nil {
			return fmt.Errorf("working directory: %w", err)
		}
		dir, err := custombuild.FindModuleRoot(wd, custombuild.DefaultModule)
		if err != nil {
			return fmt.Errorf("%w (run from a checkout, or pass -module-dir or -version)", err)
		}
		o.ModuleDir = dir
	}
	for _, t := range strings.Split(tags, ",") {
		if t = strings.TrimSpace(t); t != "" {
			o.Tags = append(o.Tags, t)
		}
	}
	// The go command's output is not streamed: a failing step's error
	// carries it, so it is printed once, below the step that failed.
	o.Stdout = os.Stdout

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return custombuild.Build(ctx, o)
}
