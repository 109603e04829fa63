package kit

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Median of v (v is not changed).
func Median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// MiBps is the throughput of size bytes in secs seconds.
func MiBps(size int64, secs float64) float64 { return float64(size) / MiB / secs }

// MinMax returns the lowest and highest throughput of the times secs.
func MinMax(secs []float64, size int64) (lo, hi float64) {
	s := append([]float64(nil), secs...)
	sort.Float64s(s)
	return MiBps(size, s[len(s)-1]), MiBps(size, s[0])
}

// MaxInt64 is the largest of v, 0 if none.
func MaxInt64(v []int64) int64 {
	var m int64
	for i, x := range v {
		if i == 0 || x > m {
			m = x
		}
	}
	return m
}

// FmtSecs lists times in seconds, 3 decimals.
func FmtSecs(v []float64) string {
	parts := make([]string, len(v))
	for i, s := range v {
		parts[i] = strconv.FormatFloat(s, 'f', 3, 64)
	}
	return strings.Join(parts, " ")
}

// FmtRatios lists ratios, 2 decimals.
func FmtRatios(v []float64) string {
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = fmt.Sprintf("%.2f", x)
	}
	return strings.Join(parts, " ")
}

// HumanBytes writes n in GiB, MiB or bytes.
func HumanBytes(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/MiB)
	default:
		return fmt.Sprintf("%d bytes", n)
	}
}
