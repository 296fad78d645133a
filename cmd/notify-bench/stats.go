// SPDX-License-Identifier: GPL-3.0-or-later

package main

import (
	"fmt"
	"math"
	"sort"
	"time"
)

// samples is a series of latencies.
type samples []time.Duration

// summary is what the report shows of a series.
type summary struct {
	N                  int
	P50, P90, P99, Max time.Duration
	Min                time.Duration
}

// quantile is the nearest-rank quantile of sorted s.
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	if i < 0 {
		i = 0
	}
	if i >= len(sorted) {
		i = len(sorted) - 1
	}
	return sorted[i]
}

func (s samples) summary() summary {
	sorted := append([]time.Duration(nil), s...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	if len(sorted) == 0 {
		return summary{}
	}
	return summary{
		N:   len(sorted),
		P50: quantile(sorted, 0.50),
		P90: quantile(sorted, 0.90),
		P99: quantile(sorted, 0.99),
		Max: sorted[len(sorted)-1],
		Min: sorted[0],
	}
}

// ms formats d in milliseconds with 3 decimals.
func ms(d time.Duration) string {
	return fmt.Sprintf("%.3f", float64(d)/float64(time.Millisecond))
}

// ratio returns a/b as a string, or "n/a" when b is too small to divide by
// meaningfully (under 10 µs: the clock and scheduling noise).
func ratio(a, b time.Duration) (float64, bool) {
	if b < 10*time.Microsecond {
		return 0, false
	}
	return float64(a) / float64(b), true
}

func fmtRatio(a, b time.Duration) string {
	r, ok := ratio(a, b)
	if !ok {
		return "n/a"
	}
	return fmt.Sprintf("%.3f", r)
}

func yesNo(ok bool) string {
	if ok {
		return "**yes**"
	}
	return "**no**"
}
